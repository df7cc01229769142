"""Leading and trailing silence trimming of cuts (``dmtts prepare --trim-silence``).

Why: a TTS model learns its end token from what precedes it in training. When every utterance
ends in 0.2-0.3 s of silence, a 3 s prompt crop that ends in a pause looks like the end of an
utterance, and the AR stops at once. Trimming makes every cut start and end on speech, as
zero-shot prompts should.

The speech span is found from frame energies: frames (25 ms, hop 10 ms) whose RMS is within
``threshold_db`` of the loudest frame of the cut count as speech; the cut is truncated to the
first..last speech frame plus ``margin`` seconds on each side (kept inside the recording).
Supervisions are clipped to the new span. Cuts are lhotse views, so no audio is rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

FRAME = 0.025
HOP = 0.010


@dataclass(frozen=True)
class TrimOptions:
    threshold_db: float = 40.0  # frames quieter than the loudest frame by more than this are silence
    margin: float = 0.05  # seconds of context kept before the first and after the last speech frame


def speech_span(audio: np.ndarray, sample_rate: int, options: TrimOptions = TrimOptions()) -> tuple[float, float]:
    """``(start, end)`` in seconds of the speech in ``audio`` (1-D); the whole signal when it
    holds no frame above the threshold (e.g. digital silence)."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    duration = len(audio) / sample_rate
    frame, hop = int(round(FRAME * sample_rate)), int(round(HOP * sample_rate))
    if len(audio) < frame:
        return 0.0, duration
    n = 1 + (len(audio) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(audio[idx] ** 2, axis=1))
    peak = rms.max()
    if peak <= 0:
        return 0.0, duration
    level_db = 20 * np.log10(np.maximum(rms, 1e-12) / peak)
    speech = np.flatnonzero(level_db > -options.threshold_db)
    start = max(0.0, speech[0] * hop / sample_rate - options.margin)
    end = min(duration, (speech[-1] * hop + frame) / sample_rate + options.margin)
    return start, end


def trim_cut(cut, options: TrimOptions = TrimOptions()):
    """``cut`` truncated to its speech span, supervisions clipped to it."""
    from lhotse.utils import fastcopy

    start, end = speech_span(cut.load_audio()[0], cut.sampling_rate, options)
    start, end = round(start, 3), round(end, 3)
    if start <= 0 and end >= cut.duration:
        return cut
    trimmed = cut.truncate(offset=start, duration=end - start, keep_excessive_supervisions=True)
    sups = []
    for sup in trimmed.supervisions:
        s0, s1 = max(0.0, sup.start), min(trimmed.duration, sup.end)
        sups.append(fastcopy(sup, start=round(s0, 3), duration=round(s1 - s0, 3)))
    return fastcopy(trimmed, id=cut.id, supervisions=sups)


def trim_silence(cuts, options: TrimOptions = TrimOptions(), num_jobs: int = 1):
    """Every cut of ``cuts`` trimmed (:func:`trim_cut`), in order, as an eager ``CutSet``."""
    from concurrent.futures import ThreadPoolExecutor

    from lhotse import CutSet
    from tqdm import tqdm

    cuts = list(cuts)
    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as pool:  # decoding releases the GIL
        trimmed = list(tqdm(pool.map(lambda c: trim_cut(c, options), cuts), total=len(cuts),
                            desc="trim silence", leave=False))
    removed = sum(c.duration for c in cuts) - sum(c.duration for c in trimmed)
    logger.info("trimmed %.1f s of leading/trailing silence from %d cuts", removed, len(cuts))
    return CutSet.from_cuts(trimmed)
