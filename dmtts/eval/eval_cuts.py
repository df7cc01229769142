"""The evaluated cuts: a lhotse CutSet read lazily (never all in memory), in units of consecutive
cuts (the granule of sharding and of the score cache), and an utterance's audio at 16 kHz."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dmtts.errors import DmttsError

SAMPLE_RATE = 16000
UNIT_SIZE = 64  # cuts per scoring unit of `eval codec`: the shard granule, one cache file, the sorting window


@dataclass
class Utterance:
    utt_id: str
    wav: np.ndarray  # float32 [N] at 16 kHz
    text: str | None


def iter_cuts(cuts_path: str | Path, limit: int | None = None, flag: str = "--cuts") -> Iterator[tuple[int, object]]:
    """``(position, cut)`` of a lhotse CutSet manifest, read lazily (never all in memory); a
    repeated cut id is a clear error."""
    from dmtts.data.subsets import load_cuts

    cuts = load_cuts(cuts_path, f"{flag} manifest", lazy=True)
    path = Path(cuts_path)
    seen: set[str] = set()
    n = 0
    for pos, cut in enumerate(cuts):
        if limit is not None and pos >= limit:
            break
        if cut.id in seen:
            raise DmttsError(f"'{path}' has the cut id '{cut.id}' twice; ids must be unique")
        seen.add(cut.id)
        n += 1
        yield pos, cut
    if n == 0:
        raise DmttsError(f"'{path}' holds no cuts")


def iter_units(cuts_path: str | Path, limit: int | None = None, unit_size: int = UNIT_SIZE,
               flag: str = "--cuts") -> Iterator[tuple[int, list[tuple[int, object]]]]:
    """Units of ``unit_size`` consecutive cuts: ``(unit index, [(position, cut), ...])``, lazily."""
    unit: list[tuple[int, object]] = []
    for pos, cut in iter_cuts(cuts_path, limit, flag):
        unit.append((pos, cut))
        if len(unit) == unit_size:
            yield pos // unit_size, unit
            unit = []
    if unit:
        yield unit[0][0] // unit_size, unit


def load_utterance(cut, cuts_path: str | Path) -> Utterance:
    """A cut's audio (16 kHz mono float32) and first supervision's text."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    try:
        audio = cut.load_audio()
    except Exception as e:
        raise DmttsError(f"cannot load the audio of cut '{cut.id}' in '{cuts_path}': {e}") from None
    wav = np.asarray(audio, dtype=np.float32)
    wav = wav.mean(axis=0) if wav.ndim == 2 else wav.reshape(-1)
    if wav.size == 0 or not np.isfinite(wav).all():
        raise DmttsError(f"cut '{cut.id}' in '{cuts_path}' has empty or non-finite audio")
    return Utterance(cut.id, wav, cut.supervisions[0].text if cut.supervisions else None)
