"""Detecting a failed AR generation (VALL-E-style failure modes), so synthesis can retry it.

An AR codec language model fails in three ways that can be measured on its output alone:

* **no end token**: it never emits ``<eos>`` and runs into the length cap (``no_eos``);
* **a loop**: a code n-gram repeated back to back, e.g. one word babbled over and over or a
  stuck code (``loop``). Measured as the longest stretch where ``codes[i] == codes[i - n]``
  for some period ``n <= max_loop_ngram``: ``repeats = (stretch + n) / n`` back-to-back copies
  of one n-gram spanning ``stretch + n`` frames. A failure when that span exceeds
  ``max_loop_seconds``. In the demo corpus's real level-1 codes (195 dev utterances, 13 voices)
  the longest such span is 26 frames (0.52 s: a constant code in a pause), and no n-gram with
  n >= 2 repeats over more than the same 0.5 s; hence the default of 1 s;
* **an implausible duration** (``too_short`` / ``too_long``): the prompt tells how fast its
  speaker talks (frames per text symbol); the generation should take about that rate times the
  target's symbol count. Two utterances of the same demo voice differ in that rate by a factor
  0.63-1.59 (1st-99th percentile 0.71-1.42), so the default accepts 0.5-2x.

:class:`DecodeChecks` holds the thresholds; :func:`check_generation` returns the failure (or
``None``) with the figures behind it, which synthesis records per attempt in its manifest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

FAILURES = ("no_eos", "loop", "too_short", "too_long")


@dataclass
class DecodeChecks:
    max_loop_seconds: float = 1.0
    max_loop_ngram: int = 25
    min_duration_ratio: float = 0.5
    max_duration_ratio: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Loop:
    ngram: int  # period n of the repeated n-gram
    repeats: float  # back-to-back copies
    start: int  # first frame of the repeated stretch
    frames: int  # frames the stretch covers


def longest_loop(codes, max_ngram: int = 25) -> Loop:
    """The longest back-to-back repetition of one code n-gram (n = 1..max_ngram) in ``codes``."""
    x = np.asarray(codes).reshape(-1)
    best = Loop(0, 0.0, 0, 0)
    for n in range(1, min(max_ngram, len(x) - 1) + 1):
        same = np.concatenate([[False], x[n:] == x[:-n], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        if len(edges) == 0:
            continue
        starts, ends = edges[0::2], edges[1::2]  # runs of matches, [start, end) in x[n:] indices
        i = int(np.argmax(ends - starts))
        run = int(ends[i] - starts[i])
        if run + n > best.frames:
            best = Loop(n, (run + n) / n, int(starts[i]), run + n)
    return best


def expected_frames(prompt_frames: int, prompt_symbols: int, target_symbols: int) -> float:
    """Frames the target should take at the prompt's speaking rate (frames per text symbol)."""
    return prompt_frames / max(prompt_symbols, 1) * target_symbols


def check_generation(codes, hit_cap: bool, expected: float, checks: DecodeChecks, frame_rate: float) -> dict:
    """Judge one AR output (level-1 codes). Returns ``{"failure": None | name, "detail": str,
    "frames": n, "expected_frames": e}``; the first failing criterion of ``FAILURES`` wins."""
    n = int(len(codes))
    info = {"failure": None, "detail": "", "frames": n, "expected_frames": round(float(expected), 1)}
    if hit_cap:
        info.update(failure="no_eos", detail=f"no end token before the length cap ({n} frames)")
        return info
    loop = longest_loop(codes, checks.max_loop_ngram)
    if loop.frames > checks.max_loop_seconds * frame_rate:
        info.update(failure="loop", detail=f"a {loop.ngram}-gram of codes repeated {loop.repeats:.1f} times "
                    f"back to back ({loop.frames} frames from frame {loop.start})")
        return info
    if expected > 0:
        ratio = n / expected
        if ratio < checks.min_duration_ratio:
            info.update(failure="too_short", detail=f"{n} frames, {ratio:.2f}x the {expected:.0f} expected "
                        f"from the prompt's speaking rate")
        elif ratio > checks.max_duration_ratio:
            info.update(failure="too_long", detail=f"{n} frames, {ratio:.2f}x the {expected:.0f} expected "
                        f"from the prompt's speaking rate")
    return info


def badness(info: dict) -> float:
    """Order attempts when all of them failed: keep the one closest to a plausible output."""
    frames, expected = max(info["frames"], 1), max(info["expected_frames"], 1.0)
    penalty = 10.0 if info["failure"] in ("no_eos", "loop") else 0.0
    return penalty + abs(math.log(frames / expected))
