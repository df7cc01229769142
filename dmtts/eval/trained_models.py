"""How long the evaluated models trained: steps trained against steps configured, and whether a
wall-clock cap (``max_minutes``) cut a run short.

The source is the exported model directory's ``config.json``: its ``"training"`` block
``{"steps", "max_steps", "epochs", "minutes", "max_minutes", "capped"}`` (written by the exports of
``dmtts tts export`` and ``dmtts codec export``). A model without the block (older exports,
third-party weights) is not mentioned. ``dmtts eval codec|tts`` write what they find to
``trained_models.json`` in their output directory and as lines of ``summary.md``; ``dmtts eval
report`` repeats a bold warning at the top for every capped model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from dmtts.utils import atomic_write_text

logger = logging.getLogger(__name__)

TRAINED_MODELS_FILE = "trained_models.json"


def training_block(model_dir: str | Path) -> dict | None:
    """The ``"training"`` block of ``model_dir/config.json``, or None when there is none."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        block = json.loads(path.read_text()).get("training")
    except (OSError, ValueError, AttributeError) as e:
        logger.warning("cannot read the training block of %s (%s)", path, e)
        return None
    return block if isinstance(block, dict) and "steps" in block else None


def trained_models(models: Sequence[tuple[str, str | Path | None]]) -> list[dict]:
    """``[{"role", "path", "training"}]`` for the ``(role, model dir)`` pairs whose config.json has
    a training block (roles such as ``codec``, ``AR``, ``NAR``)."""
    out = []
    for role, model_dir in models:
        if model_dir is None:
            continue
        block = training_block(model_dir)
        if block is not None:
            out.append({"role": role, "path": str(Path(model_dir).resolve()), "training": block})
    return out


def synthesis_models(synth_dir: str | Path, codec: str | Path | None = None) -> list[tuple[str, Path | None]]:
    """The AR, NAR and codec directories behind ``dmtts synthesize --pairs`` output: the settings
    its sharded job recorded (``<synth dir>/progress/meta.json``), else ``codec`` alone (the
    ``--codec`` of ``dmtts eval tts``)."""
    from dmtts.data.sharding import META_NAME

    meta = Path(synth_dir) / "progress" / META_NAME  # the job's work dir in dmtts.tts.synthesize_pairs
    settings: dict = {}
    if meta.is_file():
        try:
            settings = json.loads(meta.read_text()).get("settings") or {}
        except (OSError, ValueError, AttributeError) as e:
            logger.warning("cannot read the synthesis settings in %s (%s)", meta, e)
    out: list[tuple[str, Path | None]] = [(role, Path(settings[key])) for role, key in (("AR", "ar"), ("NAR", "nar"))
                                          if settings.get(key)]
    codec_dir = settings.get("codec") or codec
    if codec_dir:
        out.append(("codec", Path(codec_dir)))
    return out


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def capped_warning(entry: dict) -> str | None:
    """The bold warning for a model whose run a wall-clock cap cut short (None otherwise)."""
    t = entry["training"]
    if not t.get("capped"):
        return None
    return (f"**Warning: the {entry['role']} model `{entry['path']}` is under-trained: the wall-clock cap "
            f"(max_minutes {_number(t.get('max_minutes', '?'))}) stopped its training after "
            f"{_number(t.get('steps', '?'))} of {_number(t.get('max_steps', '?'))} configured steps; "
            "its figures are not those of the configured run.**")


def training_line(entry: dict) -> str:
    """One line: steps trained of steps configured, minutes, epochs, and the warning if capped."""
    t = entry["training"]
    max_steps = t.get("max_steps") or 0
    steps = f"{_number(t.get('steps', '?'))} of {_number(max_steps)} configured steps" if max_steps else \
        f"{_number(t.get('steps', '?'))} steps (no max_steps configured)"
    minutes = f"{_number(t['minutes'])} minutes" if "minutes" in t else ""
    if minutes and t.get("max_minutes"):
        minutes += f" (cap {_number(t['max_minutes'])})"
    epochs = f"{_number(t['epochs'])} epochs" if "epochs" in t else ""
    details = ", ".join(x for x in (minutes, epochs) if x)
    line = f"- {entry['role']} `{entry['path']}`: trained {steps}" + (f" in {details}" if details else "") + "."
    if t.get("averaged_steps"):
        line += f" Weights: the mean of the checkpoints at steps {', '.join(_number(s) for s in t['averaged_steps'])}."
    warning = capped_warning(entry)
    return line + (f" {warning}" if warning else "")


def training_notes(entries: Sequence[dict]) -> list[str]:
    """The ``summary.md`` lines (a heading and one line per model); empty without entries."""
    if not entries:
        return []
    return ["Training of the evaluated models (from their config.json):", "", *map(training_line, entries)]


def write_trained_models(out_dir: str | Path, entries: Sequence[dict]) -> Path:
    """``trained_models.json`` (an empty list when no model says how it trained)."""
    path = Path(out_dir) / TRAINED_MODELS_FILE
    atomic_write_text(path, json.dumps(list(entries), indent=2) + "\n")
    return path


def read_trained_models(eval_dir: str | Path) -> list[dict]:
    """What an evaluation directory recorded (nothing for one written before this file existed)."""
    path = Path(eval_dir) / TRAINED_MODELS_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("ignoring unreadable %s (%s)", path, e)
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("training"), dict)]
