"""The ``dmtts`` command line.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
own ``cli.py``; heavy imports (torch models, transformers) happen inside the handlers so
``dmtts --help`` stays fast. A ``DmttsError`` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dmtts import __version__
from dmtts.errors import DmttsError

# Modules with a ``register(subparsers)`` function, in the order they appear in --help.
_COMMAND_MODULES = (
    "dmtts.data.cli",
    "dmtts.data.shar_cli",
    "dmtts.teachers.cli",
    "dmtts.codec.cli",
    "dmtts.text.cli",
    "dmtts.tts.cli",
    "dmtts.eval.cli",
    "dmtts.serve.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmtts",
        description="DM-Codec and DM-Codec-TTS: data preparation, codec, TTS, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"dmtts {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                # that part of the toolkit is not installed in this checkout
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except DmttsError as e:
        print(f"dmtts {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dmtts {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
