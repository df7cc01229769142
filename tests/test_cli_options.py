"""Option names across every `dmtts` command: the same thing has one name everywhere."""

import argparse

# Names that mean the same thing. A command may use one name of a group; the toolkit as a whole
# should use one. KNOWN lists groups still split (none since issue 17), so a new split fails.
SYNONYMS = [
    {"--output-dir", "--out-dir", "--outdir"},
    {"--overwrite", "--force"},
    {"--no-progress", "--quiet", "--no-progress-bar"},
    {"--num-jobs", "--jobs", "--nj"},
    {"--seed", "--random-seed"},
    {"--exp-dir", "--experiment-dir"},
    {"--device", "--devices"},
]
KNOWN: list[set[str]] = []  # every group is down to one name since issue 17
# Commands that run long enough to show a progress bar: each must offer --no-progress.
LONG_RUNNING = ["codec train", "tts train", "tokenize", "teachers extract", "synthesize", "segment"]


def _commands():
    from dmtts.cli import build_parser

    def walk(parser, prefix=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, prefix + (name,))
        if prefix:
            yield " ".join(prefix), {o for a in parser._actions for o in a.option_strings if o.startswith("--")}

    return dict(walk(build_parser()))


def test_no_new_synonyms_across_commands():
    commands = _commands()
    used = set().union(*commands.values())
    for group in SYNONYMS:
        names = group & used
        if group in KNOWN:
            continue
        users = {name: sorted(c for c, opts in commands.items() if name in opts) for name in names}
        assert len(names) <= 1, f"one thing under several option names: {users}"


def test_long_running_commands_can_hide_their_progress_bar():
    commands = _commands()
    for command in LONG_RUNNING:
        assert command in commands, f"no command '{command}'"
        assert "--no-progress" in commands[command], f"'dmtts {command}' has no --no-progress"


def test_python_dash_m_runs_the_cli():
    """`python -m dmtts` is the `dmtts` command (a source checkout without the entry point)."""
    import subprocess
    import sys

    from dmtts import __version__

    out = subprocess.run([sys.executable, "-m", "dmtts", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"dmtts {__version__}"
