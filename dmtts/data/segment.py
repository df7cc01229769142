"""Fixed-length windows of cuts, each with the transcript of its own audio (``dmtts segment``).

DM-Codec distils the LM representation of a segment's transcript into the codes of that
segment's audio. The paper's pipeline cuts the training audio into fixed 3 s segments first,
transcribes each segment and runs the LM on that transcript, so the distilled text is the text
spoken in the audio. Cropping 3 s at random out of a whole utterance while keeping the whole
utterance's LM states (the ``whole`` ablation) distils mostly text that is not in the crop.

``segment_cuts`` turns every cut into consecutive non-overlapping windows ``[k·W, (k+1)·W)``;
a last, shorter window is kept when it lasts at least ``min_window`` seconds. A window's text
is, in order of preference:

* the words of the cut's word alignment whose midpoint falls inside the window (alignment
  times are relative to the supervision start, as everywhere in dmtts), or
* the transcript of the window's audio by an ASR (``--asr``), as the paper does, or
* (``--estimate-words``, no ASR) the cut's reference words placed by character position over
  the span between the first and last non-silent frame. This assumes a steady speaking rate:
  good for synthetic corpora such as the demo's, rough for read speech with long pauses
  (``docs/replication.md`` measures it against ASR windows on the demo corpus).

Windows keep time-aligned custom arrays (``sm_feats``: lhotse slices ``TemporalArray`` fields
on truncation) and drop whole-utterance ones (``lm_feats``, ``lm_text``), which no longer
describe the window. Each window carries ``custom["window"] = {"source", "index", "offset",
"text_source"}`` so codec training can check that it uses windows whole.

Output is written as the source cuts are processed: each source cut's windows go to
``OUT.partial.jsonl`` together, so a rerun after a crash skips the finished source cuts. At the
end the manifest is compressed into ``OUT`` atomically, in the original cut order.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from dmtts.errors import DmttsError
from dmtts.utils import atomic_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# whole-utterance fields that do not describe a window of the utterance
_DROPPED_CUSTOM = ("lm_feats", "lm_text", "window")


@dataclass
class SegmentResult:
    output: Path
    num_source: int = 0
    num_windows: int = 0
    num_resumed: int = 0
    num_short_tails: int = 0
    text_sources: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        if self.num_windows < 0:
            return f"{self.output} already exists; nothing to do (--overwrite segments again)"
        sources = ", ".join(f"{k}: {v}" for k, v in sorted(self.text_sources.items())) or "none"
        lines = [f"{self.num_source} cuts -> {self.num_windows} windows in {self.output} "
                 f"({self.num_resumed} cuts resumed from an earlier run; {self.num_short_tails} tails "
                 f"shorter than --min-window dropped; window text from {sources})"]
        for cut_id, reason in self.skipped:
            lines.append(f"  skipped {cut_id}: {reason}")
        return "\n".join(lines)


def window_spans(duration: float, window: float, min_window: float) -> list[tuple[float, float]]:
    """``[(start, end), ...]`` of the consecutive windows of a ``duration``-second cut.

    Full windows of ``window`` seconds, then the remainder if it lasts at least ``min_window``.
    A cut shorter than ``min_window`` gives no window.
    """
    if window <= 0:
        raise DmttsError(f"--window must be positive (got {window})")
    if not 0 < min_window <= window:
        raise DmttsError(f"--min-window must be in (0, --window] (got {min_window} with --window {window})")
    spans = []
    start = 0.0
    eps = 1e-6
    while start + window <= duration + eps:
        spans.append((round(start, 6), round(start + window, 6)))
        start += window
    if duration - start >= min_window - eps:
        spans.append((round(start, 6), round(duration, 6)))
    return spans


def words_by_midpoint(sup, start: float, end: float) -> str | None:
    """Words of ``sup``'s word alignment whose midpoint lies in ``[start, end)`` (cut time).

    The midpoint rule puts every word in exactly one window; ``None`` if the supervision has
    no word alignment.
    """
    if not sup.alignment or "word" not in sup.alignment:
        return None
    words = []
    for w in sup.alignment["word"]:
        mid = sup.start + w.start + w.duration / 2
        if start <= mid < end and w.symbol and w.symbol not in ("<eps>", "<unk>", "sil", "SIL"):
            words.append(w.symbol)
    return " ".join(words)


def speech_span(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, frame_seconds: float = 0.02,
                floor_db: float = 35.0) -> tuple[float, float]:
    """``(start, end)`` seconds of the first and last frame within ``floor_db`` of the loudest frame."""
    n = max(1, int(round(frame_seconds * sample_rate)))
    frames = len(audio) // n
    if frames == 0:
        return 0.0, len(audio) / sample_rate
    rms = np.sqrt(np.mean(audio[: frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    loud = np.flatnonzero(db >= db.max() - floor_db)
    return loud[0] * frame_seconds, (loud[-1] + 1) * frame_seconds


def estimate_word_midpoints(text: str, start: float, end: float) -> list[tuple[str, float]]:
    """Reference words with estimated midpoints: each word (plus one space) takes a share of
    ``[start, end)`` proportional to its characters, in order."""
    words = text.split()
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    if not words:
        return []
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    return [(w, float((edges[i] + edges[i + 1]) / 2)) for i, w in enumerate(words)]


def _window_cut(cut, index: int, start: float, end: float, text: str, text_source: str):
    from lhotse import SupervisionSegment

    piece = cut.truncate(offset=start, duration=end - start, preserve_id=True)
    sup0 = cut.supervisions[0] if cut.supervisions else None
    window_id = f"{cut.id}_w{index:03d}"
    sup = SupervisionSegment(
        id=window_id, recording_id=cut.recording_id, start=0.0, duration=round(end - start, 6),
        channel=sup0.channel if sup0 is not None else 0, text=text,
        language=sup0.language if sup0 is not None else None,
        speaker=sup0.speaker if sup0 is not None else None,
        gender=sup0.gender if sup0 is not None else None,
    )
    custom = {k: v for k, v in (piece.custom or {}).items() if k not in _DROPPED_CUSTOM}
    custom["window"] = {"source": cut.id, "index": index, "offset": start, "text_source": text_source}
    piece.id = window_id
    piece.supervisions = [sup]
    piece.custom = custom
    return piece


def _load_window_audio(window) -> np.ndarray:
    c = window if window.sampling_rate == SAMPLE_RATE else window.resample(SAMPLE_RATE)
    audio = np.asarray(c.load_audio(), dtype=np.float32)
    return (audio.mean(axis=0) if audio.ndim == 2 else audio).reshape(-1)


def _done_sources(partial: Path) -> set[str]:
    """Source cut ids whose windows are all in ``partial`` (a torn last line is ignored)."""
    done: set[str] = set()
    if not partial.exists():
        return done
    good_bytes = 0
    with open(partial, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # a line torn by a crash: drop it and everything after
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
            if record.get("type") == "source_done":
                done.add(record["source"])
    with open(partial, "r+b") as f:
        f.truncate(good_bytes)
    return done


def _write_lines(f, lines: Iterable[str]) -> None:
    for line in lines:
        f.write(line.encode() + b"\n")
    f.flush()
    os.fsync(f.fileno())


def segment_cuts(cuts_path: str | Path, output: str | Path, window: float = 3.0, min_window: float = 1.0,
                 asr=None, batch_size: int = 16, progress: bool = True, overwrite: bool = False,
                 estimate_words: bool = False) -> SegmentResult:
    """Split the cuts of ``cuts_path`` into windows and write them to ``output`` (resumable).

    ``asr`` (an object with ``transcribe(list[np.ndarray]) -> list[str]`` and a ``name``; the
    ``segment`` command passes one of ``dmtts.teachers.asr``) transcribes windows of cuts without word alignments; with
    ``asr=None`` such a cut is an error, since the whole-utterance text does not belong to a
    window. ``estimate_words`` (instead of ``asr``) places the reference words by character
    position (see ``estimate_word_midpoints``). Source cuts with unreadable audio (when ASR or
    the estimate needs it) are skipped and reported.
    """
    if asr is not None and estimate_words:
        raise DmttsError("--asr and --estimate-words are two ways to get window text: pass only one")
    from lhotse import load_manifest_lazy
    from tqdm import tqdm

    cuts_path, output = Path(cuts_path), Path(output)
    if not cuts_path.is_file():
        raise DmttsError(f"--cuts {cuts_path} does not exist: pass a lhotse cut manifest (.jsonl.gz)")
    window_spans(window, window, min_window)  # validates the two lengths
    partial = output.with_name(output.name + ".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        partial.unlink(missing_ok=True)
    elif output.exists() and not partial.exists():
        log.info("%s already exists: nothing to do (pass --overwrite to segment again)", output)
        return SegmentResult(output=output, num_windows=-1)
    done = _done_sources(partial)
    result = SegmentResult(output=output, num_resumed=len(done))

    # (source id, [(window, its audio when the ASR must transcribe it, else None)])
    pending: list[tuple[str, list]] = []

    def flush(f) -> None:
        need = [(w, audio) for _, ws in pending for w, audio in ws if audio is not None]
        texts: dict[str, str] = {}
        if need:
            texts = dict(zip((w.id for w, _ in need), asr.transcribe([audio for _, audio in need])))
        lines = []
        for source, ws in pending:
            for w, audio in ws:
                if audio is not None:
                    w.supervisions[0].text = texts[w.id].strip()
                lines.append(json.dumps(w.to_dict()))
            lines.append(json.dumps({"type": "source_done", "source": source, "num_windows": len(ws)}))
        _write_lines(f, lines)
        pending.clear()

    with open(partial, "ab") as f:
        bar = tqdm(load_manifest_lazy(cuts_path), desc="segment", unit="cut", disable=not progress)
        for cut in bar:
            result.num_source += 1
            if cut.id in done:
                continue
            sup = cut.supervisions[0] if cut.supervisions else None
            spans = window_spans(cut.duration, window, min_window)
            if cut.duration - (spans[-1][1] if spans else 0.0) > 1e-6:
                result.num_short_tails += 1
            windows = []
            has_alignment = sup is not None and bool(sup.alignment) and "word" in sup.alignment
            estimated = None
            if not has_alignment and estimate_words:
                reference = " ".join(x.text.strip() for x in cut.supervisions if x.text).strip()
                try:
                    span = speech_span(_load_window_audio(cut))
                except Exception as e:  # unreadable audio: report, keep going
                    result.skipped.append((cut.id, f"cannot load audio: {type(e).__name__}: {e}"[:300]))
                    continue
                estimated = estimate_word_midpoints(reference, *span)
            for k, (s, e) in enumerate(spans):
                if has_alignment:
                    text, source_kind = words_by_midpoint(sup, s, e), "alignment"
                elif estimated is not None:
                    text, source_kind = " ".join(w for w, mid in estimated if s <= mid < e), "estimated"
                elif asr is not None:
                    text, source_kind = None, "asr"
                else:
                    raise DmttsError(
                        f"cut '{cut.id}' in {cuts_path} has no word alignment, so its windows have no text: "
                        "pass --asr faster-whisper (or hf-ctc:DIR / hf-whisper:DIR) to transcribe each window, "
                        "or --estimate-words to place the reference words by character position")
                result.text_sources[source_kind] = result.text_sources.get(source_kind, 0) + 1
                windows.append((_window_cut(cut, k, s, e, text or "", source_kind), source_kind == "asr"))
            if any(needs_asr for _, needs_asr in windows):
                try:  # load the ASR's audio now, once: an unreadable cut is reported, the run goes on
                    windows = [(w, _load_window_audio(w) if needs_asr else None) for w, needs_asr in windows]
                except Exception as e:
                    result.skipped.append((cut.id, f"cannot load audio: {type(e).__name__}: {e}"[:300]))
                    continue
            else:
                windows = [(w, None) for w, _ in windows]
            pending.append((cut.id, windows))
            if sum(len(ws) for _, ws in pending) >= batch_size:
                flush(f)
        if pending:
            flush(f)

    # Compress the partial file into the final manifest, in source order (the partial file is
    # in source order: a resumed run appends the cuts after those already done).
    with atomic_path(output) as tmp, gzip.open(tmp, "wt") as out:
        for record in _read_windows(partial):
            out.write(json.dumps(record) + "\n")
            result.num_windows += 1
    partial.unlink()
    return result


def _read_windows(partial: Path) -> Iterator[dict]:
    with open(partial) as f:
        for line in f:
            record = json.loads(line)
            if record.get("type") != "source_done":
                yield record
