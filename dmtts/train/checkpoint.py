"""Atomic, resumable checkpoints.

A checkpoint is one ``torch.save`` file ``<exp_dir>/checkpoints/step-XXXXXXXX.pt`` holding
whatever state dicts the trainer passes plus the RNG states of python, numpy and torch (CPU and
CUDA). Files are written to a temporary name and renamed, so Ctrl-C or a kill never leaves a
corrupt checkpoint; ``latest_checkpoint`` only ever sees complete files. The newest ``keep_last``
files are kept.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dmtts.errors import DmttsError
from dmtts.utils import atomic_path

_CKPT_RE = re.compile(r"^step-(\d+)\.pt$")


def capture_rng_state() -> dict[str, Any]:
    """RNG states of every generator a training step may draw from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(exp_dir: str | Path) -> Path:
    return Path(exp_dir) / "checkpoints"


def list_checkpoints(exp_dir: str | Path) -> list[Path]:
    """Complete checkpoints of an experiment, oldest first."""
    return _checkpoints_in(checkpoint_dir(exp_dir))


def _checkpoints_in(folder: Path) -> list[Path]:
    """The complete checkpoint files (``step-XXXXXXXX.pt``) in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(exp_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(exp_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_step(path: str | Path) -> int:
    """The step in a checkpoint's file name (``step-00001234.pt`` -> 1234)."""
    m = _CKPT_RE.match(Path(path).name)
    if m is None:
        raise DmttsError(f"'{path}' is not named like a checkpoint (step-XXXXXXXX.pt)")
    return int(m.group(1))


def checkpoints_up_to(last: str | Path) -> list[Path]:
    """Every checkpoint of ``last``'s experiment up to and including ``last``, oldest first."""
    last = Path(last)
    step = checkpoint_step(last)
    return [p for p in _checkpoints_in(last.parent) if checkpoint_step(p) <= step]


def checkpoints_ending_at(last: str | Path, count: int) -> list[Path]:
    """The ``count`` newest checkpoints of ``last``'s experiment up to and including ``last``,
    oldest first: what ``--avg N`` averages (icefall's convention)."""
    last = Path(last)
    if count < 1:
        raise DmttsError(f"--avg must be at least 1, got {count}")
    found = checkpoints_up_to(last)
    if len(found) < count:
        raise DmttsError(f"--avg {count} needs {count} checkpoints up to '{last.name}' but '{last.parent}' holds "
                         f"{len(found)}; pass a smaller --avg or train with a larger train.keep_last")
    return found[-count:]


def average_state_dicts(states: list[dict[str, torch.Tensor]],
                        keep_last: Callable[[str], bool] = lambda name: False) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point entries of several state dicts of one model
    (accumulated in float64, stored in each entry's dtype). Integer and boolean entries (counters,
    flags), and entries for which ``keep_last(name)`` is true, are taken from the last dict."""
    if not states:
        raise DmttsError("no state dicts to average")
    last = states[-1]
    for i, s in enumerate(states[:-1]):
        if s.keys() != last.keys():
            diff = sorted(set(s) ^ set(last))[:3]
            raise DmttsError(f"state dict {i} does not match the last one (keys differ: {diff}); "
                             "only checkpoints of one run can be averaged")
    out = {}
    for name, value in last.items():
        if not value.is_floating_point() or keep_last(name):
            out[name] = value.clone()
            continue
        total = torch.zeros_like(value, dtype=torch.float64)
        for s in states:
            total += s[name].to(torch.float64)
        out[name] = (total / len(states)).to(value.dtype)
    return out


def save_checkpoint(exp_dir: str | Path, step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Save ``state`` (plus RNG states) as the checkpoint of ``step``; prune old ones."""
    path = checkpoint_dir(exp_dir) / f"step-{step:08d}.pt"
    payload = dict(state)
    payload["step"] = step
    payload["rng"] = capture_rng_state()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    if keep_last > 0:
        for old in list_checkpoints(exp_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, restore_rng: bool = True) -> dict[str, Any]:
    """Load a checkpoint file (onto CPU); optionally restore the RNG states it holds."""
    path = Path(path)
    if not path.is_file():
        raise DmttsError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DmttsError(f"checkpoint '{path}' cannot be read ({e}); delete it to resume from the previous one") from None
    if restore_rng and "rng" in payload:
        restore_rng_state(payload["rng"])
    return payload
