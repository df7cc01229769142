"""Memory of the benchmarks: peak RSS of a process, the memory this machine has available, and
what a ``train_speed.py`` run will need, checked before it starts.

The estimates are linear models fitted to measurements (2-core AMD EPYC VM, torch 2.13 CPU):

* codec training steps: ``docs/benchmarks.md`` ("Peak memory"), one fresh process per system at
  batch 1 x 3 s. A step adds the gradients and Adam's two moments (12 bytes per parameter,
  independent of the batch) and the activations, which grow with the audio seconds in the batch:
  SpeechTokenizer 5.22 GiB = 1.96 (state) + 3 s x 1.09 GiB/s. The three systems sit in one
  process during the timed rounds, so that process holds every system's state and the largest
  step's activations: 10.3 GiB predicted and measured at batch 1 x 3 s, about 27 GiB at the
  public batch 6 x 3 s (a 24 GiB machine was exhausted at 21 GiB);
* TTS optimiser steps: one fresh process per model at the ``small`` size (batch 1 and 2 x 4 s):
  about 20 bytes per parameter for gradients and ScaledAdam state (4 more for the weights) and
  134 bytes per (layer x d_model x token) of activations;
* the offline stages: inference only; the paper-size AR + NAR + codec weights dominate.
"""

from __future__ import annotations

import resource
from pathlib import Path

GIB = 2 ** 30
BASE_GIB = 0.45  # python, torch, lhotse and the benchmark's own buffers in one process
CODEC_CHILD_BASE_GIB = 0.23  # what the codec memory children held before building (in their "RSS after building")
# per codec system: (RSS after building, parameters G + D in millions, activation GiB per audio second)
CODEC_SYSTEMS_MEMORY = {
    "SpeechTokenizer": (1.50, 174.9, 1.09),
    "dmtts official+pub-D": (1.08, 174.5, 0.83),
    "dmtts paper": (0.56, 36.6, 0.43),
}
ADAM_STATE_BYTES = 12  # gradient + two moments, fp32
SCALED_ADAM_STATE_BYTES = 20  # gradient + ScaledAdam's moments and scale statistics (measured)
TTS_ACTIVATION_BYTES = 134  # per layer x d_model x token, forward + backward (measured)
TEXT_TOKENS_PER_SECOND = 12
MARGIN = 1.15  # the estimates are fits; leave room for the allocator and the rest of the machine


def max_rss_bytes() -> int:
    """Peak resident memory of this process. ``VmHWM`` rather than ``ru_maxrss``: Linux keeps
    ``ru_maxrss`` across ``execve``, so a child would report its (larger) parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def available_bytes() -> int | None:
    """Memory a new process can use without swapping: ``MemAvailable`` of ``/proc/meminfo``,
    capped by a cgroup v2 limit when there is one; psutil elsewhere; None if neither says."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        try:
            import psutil

            available = int(psutil.virtual_memory().available)
        except ImportError:
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def codec_need_gib(batch: int, seconds: float) -> float:
    """Peak RSS of the codec part: every system built, with its optimiser state, plus the
    largest step's activations (the per-system memory children run one at a time and need less)."""
    audio_s = batch * seconds
    held = sum(built - CODEC_CHILD_BASE_GIB + params * 1e6 * ADAM_STATE_BYTES / GIB
               for built, params, _ in CODEC_SYSTEMS_MEMORY.values())
    return BASE_GIB + held + max(act for _, _, act in CODEC_SYSTEMS_MEMORY.values()) * audio_s


def tts_need_gib(n_layers: int, d_model: int, params: dict[str, float], batch: int, seconds: float,
                 copies: int = 1) -> float:
    """Peak RSS of the TTS part: ``copies`` (2 with --compile) of each model (``params``: kind ->
    parameter count) with its optimiser state, and every model's activations."""
    tokens = batch * seconds * (50 + TEXT_TOKENS_PER_SECOND)
    weights_state = sum(params.values()) * (4 + SCALED_ADAM_STATE_BYTES) / GIB
    activations = len(params) * TTS_ACTIVATION_BYTES * n_layers * d_model * tokens / GIB
    return BASE_GIB + copies * (weights_state + activations)


def stages_need_gib(model_params: float, seconds: float) -> float:
    """Peak RSS of the stages part: fp32 weights of the models held at once, the eval models and
    the activations of a ``seconds`` clip (HuBERT attention grows with its square)."""
    return BASE_GIB + 0.6 + model_params * 4 / GIB + 0.05 * seconds + 0.002 * seconds ** 2


def check_fits(needs: dict[str, float], how_to_shrink: str) -> str:
    """A one-line account of need and room; ``SystemExit`` with what the run needs when it would
    not fit in the memory available (the parts run one after another: the largest counts)."""
    need = max(needs.values())
    parts = ", ".join(f"{name} {gib:.1f} GiB" for name, gib in needs.items())
    available = available_bytes()
    if available is None:
        return f"estimated peak RSS {need:.1f} GiB ({parts}); available memory unknown"
    room = available / GIB
    if need * MARGIN > room:
        raise SystemExit(f"this run needs about {need:.1f} GiB of memory ({parts}; x{MARGIN} margin: "
                         f"{need * MARGIN:.1f} GiB) but {room:.1f} GiB is available: {how_to_shrink}, "
                         "or pass --no-memory-check to run anyway")
    return f"estimated peak RSS {need:.1f} GiB ({parts}); {room:.1f} GiB available"
