"""Command-line options every training command shares, so `dmtts codec train` and
`dmtts tts train` spell them the same way."""

from __future__ import annotations

import argparse


def add_training_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config`` (required), ``--exp-dir`` (required), ``--resume`` and ``--no-progress``."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--exp-dir", required=True, help="experiment directory (checkpoints, tensorboard, config)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --exp-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
