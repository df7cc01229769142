"""Import hygiene of the package, read from the source (``ast``; nothing is imported or run):

* no import cycle between modules of ``dmtts/`` (imports inside functions count too: a lazy
  import still ties the two modules together);
* no upward import between its packages: ``LAYERS`` below declares the order, lowest first,
  and a package may import only from packages in lower layers (never from one in its own layer);
* no module of ``dmtts/`` or ``benchmarks/`` over ``MAX_LINES`` lines.

Each failure names the module, the line and what to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dmtts"
MAX_LINES = 500

# Layers of the package, lowest first: a unit (a subpackage ``dmtts/<name>/`` or a top-level
# module ``dmtts/<name>.py``; ``dmtts`` is the package's own ``__init__``) imports only from
# units of lower layers. This is what the code does, checked here so it stays that way.
LAYERS = [
    {"dmtts", "errors"},  # the version string; the toolkit's one exception type
    {"utils"},  # atomic writes, path checks, rank roles, the torchrun environment
    {"config", "audio", "train", "optim"},  # typed YAML configs; audio I/O; DDP/checkpoints/tensorboard; optimisers
    {"text"},  # text normalisation, phonemes, BPE
    {"data"},  # corpora, manifests, sharded stages, datasets
    {"codec", "teachers"},  # DM-Codec; frozen teacher models (LM, SM, ASR)
    {"tts"},  # DM-Codec-TTS: models, training, synthesis
    {"eval"},  # metrics, codec and TTS evaluation, reports
    {"serve"},  # the HTTP demo
    {"cli"},  # the `dmtts` command, which registers every package's commands
    {"__main__"},  # `python -m dmtts`: runs the command
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported module of the package, line)`` for every import in the file, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in modules else base, node.lineno))
    out = []
    for name, line in found:
        while name and name not in modules:  # `import dmtts.x.y.attr` or a package path
            name = name.rpartition(".")[0]
        if name.startswith("dmtts") and name != module:
            out.append((name, line))
    return out


def import_graph() -> dict[str, list[tuple[str, int]]]:
    modules = module_files()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def where(module: str, line: int) -> str:
    path = module_files()[module]
    return f"{path.relative_to(REPO)}:{line}"


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for target, _ in edges:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_checks_find_a_cycle_and_resolve_relative_imports(tmp_path):
    graph = {"a": [("b", 3)], "b": [("c", 5)], "c": [("a", 7)], "d": [("a", 1)]}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": [("b", 1)], "b": []}) == []
    modules = {"dmtts.eval": Path("x/__init__.py"), "dmtts.eval.report": Path("x/report.py"),
               "dmtts.eval.report_html": Path("x/report_html.py"), "dmtts.errors": Path("x/errors.py")}
    src = "from .report_html import html\nfrom ..errors import DmttsError\nfrom . import report_html\n"
    probe = tmp_path / "report.py"
    probe.write_text(src)
    assert sorted(imports_of("dmtts.eval.report", probe, modules)) == [
        ("dmtts.errors", 2), ("dmtts.eval.report_html", 1), ("dmtts.eval.report_html", 3)]


def test_no_import_cycle_between_modules():
    graph = import_graph()
    problems = []
    for component in cycles(graph):
        members = set(component)
        edges = [f"{where(m, line)} imports {t}" for m in component for t, line in graph[m] if t in members]
        problems.append(f"import cycle between {', '.join(component)}: " + "; ".join(edges)
                        + ". Move what both need into one module that both import")
    assert not problems, "\n".join(problems)


def test_every_package_is_in_a_layer():
    units = {unit_of(m) for m in module_files()}
    missing = sorted(units - set(LAYER_OF))
    assert not missing, (f"dmtts units {missing} are in no layer: add each to LAYERS in tests/test_layering.py, "
                         "above everything it imports and below everything that imports it")


def test_no_upward_import_between_packages():
    problems = []
    for module, targets in import_graph().items():
        unit = unit_of(module)
        for target, line in targets:
            other = unit_of(target)
            if other == unit or unit not in LAYER_OF or other not in LAYER_OF:
                continue
            if LAYER_OF[other] >= LAYER_OF[unit]:
                kind = "a package of the same layer" if LAYER_OF[other] == LAYER_OF[unit] else "a higher layer"
                problems.append(f"{where(module, line)}: {unit} (layer {LAYER_OF[unit]}) imports {target} from "
                                f"{kind} ({other}, layer {LAYER_OF[other]}): move what it needs down, or the "
                                f"importing code up")
    assert not problems, "\n".join(problems)


def test_no_module_over_the_line_limit():
    problems = []
    for folder in ("dmtts", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                problems.append(f"{path.relative_to(REPO)}:{MAX_LINES + 1}: {n} lines (limit {MAX_LINES}): split it "
                                "along its roles, one job per module")
    assert not problems, "\n".join(problems)
