"""The rows of the ``dmtts eval codec`` table and the scorer they share.

A :class:`System` is the original audio (``ground_truth``), a DM-Codec at ``n_q`` levels, a classic
codec (:mod:`dmtts.eval.classic_codecs`) or reconstructions read from a directory; the
:class:`Scorer` scores one unit's utterances of a system against the originals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dmtts.eval.classic_codecs import ClassicCodec
from dmtts.eval.eval_cuts import Utterance
from dmtts.eval.metrics import EvalModels
from dmtts.eval.signal_metrics import COMB_N_FFT, cosine, frame_rate_comb_db, pesq_wb, stoi_score

SIGNAL_METRICS = ("stoi", "pesq", "visqol", "sim")  # need the reference audio


def system_file(directory: Path, utt_id: str) -> Path | None:
    """Another system's reconstruction ``DIR/<utt_id>.wav`` (or ``.flac``), if present."""
    for ext in (".wav", ".flac"):
        p = directory / f"{utt_id}{ext}"
        if p.is_file():
            return p
    return None


@dataclass
class System:
    """One row of the table: the originals (``ground_truth``), a DM-Codec at ``n_q`` levels, a
    classic codec (``baseline``) or reconstructions read from ``directory``."""

    name: str
    identity: str
    extra: dict
    n_q: int | None = None
    directory: Path | None = None
    baseline: ClassicCodec | None = None
    reference_free: bool = False

    def cached_metrics(self, metrics: Sequence[str]) -> list[str]:
        """What is cached per utterance: ``asr`` (the transcript behind WER/WIL) and the metrics
        other than WER/WIL; the ground truth has no reference to compare with."""
        out = ["asr"] if ("wer" in metrics or "wil" in metrics) else []
        out += [m for m in metrics if m not in ("wer", "wil") and not (self.reference_free and m in SIGNAL_METRICS)]
        return out


class Scorer:
    """Scores the audio of one unit; caches reference embeddings across the unit's systems."""

    def __init__(self, models: EvalModels, asr_batch: int = 16):
        self.models = models
        self.asr_batch = asr_batch
        self._ref_emb: dict[str, np.ndarray] = {}

    def new_unit(self) -> None:
        self._ref_emb.clear()

    def transcribe(self, wavs: Mapping[str, np.ndarray]) -> dict[str, str]:
        ids = sorted(wavs, key=lambda i: len(wavs[i]))  # similar lengths share an ASR batch
        out: dict[str, str] = {}
        for s in range(0, len(ids), self.asr_batch):
            chunk = ids[s:s + self.asr_batch]
            hyps = self.models.asr.transcribe([wavs[i] for i in chunk])
            if len(hyps) != len(chunk):
                raise RuntimeError(f"the ASR returned {len(hyps)} transcripts for {len(chunk)} inputs")
            out.update(zip(chunk, hyps))
        return out

    def ref_embedding(self, utt: Utterance) -> np.ndarray:
        if utt.utt_id not in self._ref_emb:
            self._ref_emb[utt.utt_id] = self.models.sim.embed([utt.wav])[0]
        return self._ref_emb[utt.utt_id]

    def score(self, wanted: Mapping[str, list[str]], refs: Mapping[str, Utterance],
              degs: Mapping[str, np.ndarray]) -> dict[tuple[str, str], object]:
        """``{(utt_id, metric): value}`` for the ``wanted`` metrics of each utterance."""
        hyps = self.transcribe({u: degs[u] for u, ms in wanted.items() if "asr" in ms})
        out: dict[tuple[str, str], object] = {}
        for utt_id, ms in wanted.items():
            ref, deg = refs[utt_id], degs[utt_id]
            for m in ms:
                if m == "asr":
                    value = hyps[utt_id]
                elif m == "stoi":
                    value = stoi_score(ref.wav, deg)
                elif m == "pesq":
                    value = pesq_wb(ref.wav, deg)
                elif m == "visqol":
                    value = self.models.visqol(ref.wav, deg)
                elif m == "sim":
                    value = cosine(self.ref_embedding(ref), self.models.sim.embed([deg])[0])
                elif m == "mos_proxy":
                    value = self.models.mos(deg)
                elif m == "comb":  # empty for an utterance shorter than one of its STFT frames
                    value = frame_rate_comb_db(deg) if len(deg) >= COMB_N_FFT else math.nan
                else:
                    raise ValueError(m)
                out[(utt_id, m)] = value
        return out
