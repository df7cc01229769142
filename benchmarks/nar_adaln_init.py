"""Learning experiment: does the NAR's accuracy rise earlier with a non-zero adaptive-LayerNorm init?

Trains the NAR twice on the same data, seed and config, once with the adaptive LayerNorm
projections initialised to exactly zero (the old behaviour) and once with the current small
random init (``dmtts.tts.transformer.ADALN_INIT_STD``), then prints the training accuracy at
each logged step and writes ``OUT.csv`` and ``OUT.png``.

    python benchmarks/nar_adaln_init.py --config recipes/demo/conf/nar_tiny.yaml \\
        --workdir recipes/demo --steps 300 --out docs/quality/nar_adaln_init

Run it from a demo work directory that holds the tokenized, phonemized cuts (after stage 6 of
``recipes/demo/run.sh``); ``--workdir`` is where the config's relative paths resolve.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def run(config: Path, workdir: Path, steps: int, std: float, exp_dir: Path) -> list[tuple[int, float, float]]:
    import yaml

    import dmtts.tts.transformer as transformer
    from dmtts.tts.train import train

    cfg = yaml.safe_load(config.read_text())
    cfg["training"].update(max_steps=steps, max_minutes=0.0, valid_interval=0, save_interval=0)
    conf = exp_dir.parent / f"{exp_dir.name}.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    old = transformer.ADALN_INIT_STD
    transformer.ADALN_INIT_STD = std
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        train("nar", str(conf), str(exp_dir), progress=False)
    finally:
        os.chdir(cwd)
        transformer.ADALN_INIT_STD = old
    rows = []
    for line in (exp_dir / "curve.csv").read_text().splitlines()[1:]:
        step, _minutes, loss, acc = line.split(",")[:4]
        if loss and acc:
            rows.append((int(step), float(loss), float(acc)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="NAR training config (e.g. nar_tiny.yaml)")
    p.add_argument("--workdir", type=Path, required=True, help="directory the config's paths are relative to")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path, required=True, help="output prefix: OUT.csv and OUT.png")
    args = p.parse_args()
    config, workdir = args.config.resolve(), args.workdir.resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, std in (("zero init", 0.0), ("N(0, 0.02^2) init", 0.02)):
            results[name] = run(config, workdir, args.steps, std, Path(tmp) / name.split()[0].replace("(", ""))
    names = list(results)
    steps = [r[0] for r in results[names[0]]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["step," + ",".join(f"{n} loss,{n} acc" for n in names)]
    print(f"{'step':>6} " + " ".join(f"{n + ' acc':>22}" for n in names))
    for i, st in enumerate(steps):
        cells = [results[n][i] for n in names]
        lines.append(f"{st}," + ",".join(f"{c[1]:.4f},{c[2]:.4f}" for c in cells))
        print(f"{st:>6} " + " ".join(f"{c[2]:>22.4f}" for c in cells))
    args.out.with_suffix(".csv").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for n in names:
        ax.plot([r[0] for r in results[n]], [r[2] for r in results[n]], label=n)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("NAR training accuracy (levels 2-8)")
    ax.set_title("Adaptive LayerNorm initialisation")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    print(f"written {args.out.with_suffix('.csv')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
