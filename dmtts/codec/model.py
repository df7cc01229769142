"""DM-Codec: SEANet encoder -> RVQ -> SEANet decoder.

``DMCodec.encode(wav[B, 1, N], n_q=None) -> codes[B, n_q, T]`` with ``T = ceil(N / 320)`` (50 Hz
at 16 kHz), ``decode(codes) -> wav[B, 1, T * 320]`` and ``forward`` for training.
``save_pretrained(dir)`` writes ``config.json`` + ``model.safetensors`` (weight norm folded);
``DMCodec.from_pretrained(dir)`` loads them.

Long audio: :meth:`DMCodec.encode_long` encodes in chunks (default 30 s, with 1 s of context on
each side that is encoded and thrown away), so memory is bounded by the chunk size, not the file
length. Codes of frames away from chunk borders are identical to whole-file encoding; frames
next to a border can differ, because the BiLSTM and the convolutions see only ``context``
seconds beyond the chunk instead of the whole file. With the default 1 s context, in our tests
more than 99% of the codes match whole-file encoding (level 1 matches best; higher levels,
which quantize small residuals, differ more often), and the decoded audio is indistinguishable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dmtts.codec.config import CodecModelConfig, PRESETS, model_config
from dmtts.codec.periodic import HarmonicPhase
from dmtts.codec.pitch import PitchFeatures, PitchPrediction, PitchTrack
from dmtts.codec.rvq import ResidualVectorQuantizer
from dmtts.codec.seanet import (LSTMCarry, SEANetDecoder, SEANetEncoder, fold_weight_norm, has_weight_norm,
                                scaled_conv_init_)
from dmtts.config import from_dict, to_dict
from dmtts.errors import DmttsError
from dmtts.utils import atomic_path, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SEMANTIC_PROJECTION_NAME = "semantic_projection.safetensors"
# config.json entries that describe an export but are not model config (see import_public.py)
EXPORT_METADATA_KEYS = ("model_type", "imported_from", "semantic_projection", "training")


@dataclass
class CodecOutput:
    wav: torch.Tensor  # [B, 1, N] reconstruction, trimmed to the input length
    levels: list[torch.Tensor]  # each RVQ level's quantized output [B, D, T]
    commit_loss: torch.Tensor
    codes: torch.Tensor  # [B, n_q, T]
    latents: torch.Tensor  # encoder output [B, D, T]
    dead_codes: int = 0
    replaced: list[int] = field(default_factory=list)  # RVQ entries replaced per level (training)
    pitch: PitchPrediction | None = None  # the harmonic head's F0 and voicing per frame (else None)
    pitch_track: PitchTrack | None = None  # YIN's analysis of the input, when model.encoder_pitch used it


class DMCodec(nn.Module):
    def __init__(self, config: CodecModelConfig | None = None):
        super().__init__()
        self.config = config = config or CodecModelConfig()
        kw = dict(n_filters=config.n_filters, dimension=config.dimension, strides=config.strides,
                  n_residual_layers=config.n_residual_layers, residual_kernel_size=config.residual_kernel_size,
                  dilation_base=config.dilation_base, lstm_layers=config.lstm_layers, compress=config.compress,
                  true_skip=config.true_skip)
        self.encoder = SEANetEncoder(**kw)
        self.quantizer = ResidualVectorQuantizer(
            dim=config.dimension, n_q=config.n_q, codebook_size=config.codebook_size, decay=config.ema_decay,
            epsilon=config.ema_epsilon, kmeans_init=config.kmeans_init, kmeans_iters=config.kmeans_iters,
            threshold_ema_dead_code=config.dead_code_threshold)
        self.decoder = SEANetDecoder(**kw, activation=config.decoder_activation, head=config.decoder_head,
                                     istft_hop=config.istft_hop, istft_n_fft=config.istft_n_fft,
                                     istft_residual_layers=config.istft_residual_layers,
                                     sample_rate=config.sample_rate, harmonic_f0_min=config.harmonic_f0_min,
                                     harmonic_f0_max=config.harmonic_f0_max,
                                     harmonic_envelope_bins=config.harmonic_envelope_bins,
                                     harmonic_noise_rotation=config.harmonic_noise_rotation)
        if config.conv_init == "scaled":
            scaled_conv_init_(self.encoder)
            scaled_conv_init_(self.decoder)
        self.pitch_features = (PitchFeatures(config.dimension, config.sample_rate, self.hop_length,
                                             config.harmonic_f0_min, config.harmonic_f0_max,
                                             log_f0_scale=config.encoder_pitch_scale)
                               if config.encoder_pitch else None)

    # -- properties -------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.config.strides))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def n_q(self) -> int:
        return self.config.n_q

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second with the first ``n_q`` levels (500 bps per level for the paper preset)."""
        n_q = self.n_q if n_q is None else n_q
        return self.frame_rate * n_q * math.log2(self.config.codebook_size)

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    @classmethod
    def from_preset(cls, name: str) -> "DMCodec":
        return cls(model_config(name))

    # -- checks -----------------------------------------------------------------------------------
    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor):
            raise DmttsError(f"audio must be a torch.Tensor [B, 1, N], got {type(wav).__name__}")
        if wav.dim() == 1:
            wav = wav[None, None]
        elif wav.dim() == 2:
            wav = wav[:, None]
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise DmttsError(f"audio must have shape [B, 1, N] (mono), got {tuple(wav.shape)}")
        if wav.shape[-1] == 0:
            raise DmttsError("audio is empty (0 samples)")
        if not torch.isfinite(wav).all():
            raise DmttsError("audio contains NaN or infinite samples")
        return wav

    # -- training forward ---------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor, n_q: int | None = None, decoder_levels: int | None = None) -> CodecOutput:
        """Training forward; ``decoder_levels`` decodes only the first that many levels
        (quantizer dropout, ``train.quantizer_dropout``) while every level is quantized."""
        wav = self._check_wav(wav)
        n = wav.shape[-1]
        track = self.pitch_features.track(wav) if self.pitch_features is not None else None
        latents = self._with_pitch(self.encoder(wav), wav, track)
        q = self.quantizer(latents, n_q=n_q, decoder_levels=decoder_levels)
        out, pitch = self.decoder.forward_with_pitch(q.quantized)
        return CodecOutput(wav=out[..., :n], levels=q.levels, commit_loss=q.commit_loss, codes=q.codes,
                           latents=latents, dead_codes=q.dead_codes, replaced=q.replaced, pitch=pitch,
                           pitch_track=track)

    # -- inference -----------------------------------------------------------------------------------
    def encode(self, wav: torch.Tensor, n_q: int | None = None, sample_rate: int | None = None) -> torch.Tensor:
        """``wav[B, 1, N]`` at ``sample_rate`` -> ``codes[B, n_q, ceil(N / hop)]`` (int64).

        Pass ``sample_rate`` to have it checked against the model's (no silent mismatch).
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise DmttsError(f"audio is at {sample_rate} Hz but this codec expects {self.sample_rate} Hz: "
                             f"resample it first (dmtts.audio.resample or load_audio(path, {self.sample_rate}))")
        wav = self._check_wav(wav)
        return self.quantizer.encode(self._with_pitch(self._encoder(wav), wav), n_q=n_q)

    @torch.no_grad()
    def encode_batch(self, wavs: list[torch.Tensor], n_q: int | None = None) -> list[torch.Tensor]:
        """Encode mono waveforms of different lengths (each ``[N_i]``) in one call; returns
        ``codes[n_q, ceil(N_i / hop)]`` per item, as encoding each item alone gives.

        A zero-padded batch through :meth:`encode` is *not* the same: the backward LSTM starts in
        the padding and the convolutions see zeros past the item's end, so codes near the end
        of shorter items change (0.8 % of codes in a measured 60 s batch). Tokenization uses
        this method so that training codes equal the codes of the same audio as a prompt.

        On CPU every item runs alone (the convolutions ran per item anyway, for cache
        locality): the codes are bit-identical to :meth:`encode`. On a GPU the convolutions
        run per item and the BiLSTM once, on a packed batch (no padding enters it), which is
        exact up to float rounding.
        """
        if not wavs:
            return []
        items = [self._check_wav(w)[0] for w in wavs]  # [1, N_i]
        if items[0].device.type == "cpu":
            return [self.encode(w[None], n_q=n_q)[0] for w in items]
        latents = [self._with_pitch(z[None], w[None])[0]
                   for z, w in zip(self.encoder.forward_unpadded(items), items)]  # [D, T_i]
        lengths = [z.shape[-1] for z in latents]
        codes = self.quantizer.encode(torch.cat(latents, dim=-1)[None], n_q=n_q)[0]  # [n_q, sum T_i]
        return list(codes.split(lengths, dim=-1))

    # CPU inference runs the high-rate convolutions chunk by chunk (cache friendly, same result
    # up to float rounding); training, autograd and GPUs use the plain whole-tensor forward.
    inference_chunk_frames: int = 50

    def _use_chunked(self, t: torch.Tensor) -> bool:
        return (self.inference_chunk_frames > 0 and t.device.type == "cpu" and not torch.is_grad_enabled()
                and not self.training)

    def _with_pitch(self, latents: torch.Tensor, wav: torch.Tensor, track: PitchTrack | None = None) -> torch.Tensor:
        """The encoder output plus the pitch side input (``model.encoder_pitch``), else unchanged."""
        if self.pitch_features is None:
            return latents
        return latents + self.pitch_features(wav, latents.shape[-1], track).to(latents.dtype)

    def _encoder(self, wav: torch.Tensor) -> torch.Tensor:
        if self._use_chunked(wav):
            return self.encoder.forward_chunked(wav, self.inference_chunk_frames, 2)
        return self.encoder(wav)

    def _decoder(self, z: torch.Tensor, phase: HarmonicPhase | None = None,
                 carry: LSTMCarry | None = None) -> torch.Tensor:
        if self._use_chunked(z):
            return self.decoder.forward_chunked(z, self.inference_chunk_frames, 2, phase, carry)
        return self.decoder(z, phase, carry)

    def decode(self, codes: torch.Tensor, length: int | None = None, phase: HarmonicPhase | None = None,
               carry: LSTMCarry | None = None) -> torch.Tensor:
        """``codes[B, K, T]`` (K <= n_q levels) -> ``wav[B, 1, T * hop]`` (or ``length`` samples).

        ``phase`` and ``carry`` are for decoding overlapping windows of one signal one after
        another (streaming, :meth:`decode_long`): ``phase`` anchors and receives the harmonic
        head's running phase (:class:`~dmtts.codec.periodic.HarmonicPhase`; other decoders ignore
        it), ``carry`` the decoder LSTM's state (:class:`~dmtts.codec.seanet.LSTMCarry`; the audio
        then starts after its ``lead`` frames)."""
        if codes.dim() == 2:
            codes = codes[None]
        if codes.shape[-1] <= (carry.lead if carry is not None else 0):
            raise DmttsError("codes are empty (0 frames)")
        wav = self._decoder(self.quantizer.decode(codes), phase, carry)
        return wav if length is None else wav[..., :length]

    def decode_expected(self, probs: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """``probs[B, K, T, codebook_size]`` (a distribution over the codes of each level) ->
        ``wav[B, 1, T * hop]``: the decoder run on the expected latent
        (:meth:`~dmtts.codec.rvq.ResidualVectorQuantizer.decode_expected`). For a model that
        predicts codes with little confidence (an undertrained TTS NAR), this averages where a
        greedy code would add a wrong residual vector."""
        if probs.dim() == 3:
            probs = probs[None]
        if probs.shape[2] == 0:
            raise DmttsError("probs are empty (0 frames)")
        wav = self._decoder(self.quantizer.decode_expected(probs))
        return wav if length is None else wav[..., :length]

    def encode_long(self, wav: torch.Tensor, n_q: int | None = None, chunk_seconds: float = 30.0,
                    context_seconds: float = 1.0) -> torch.Tensor:
        """Encode ``wav[B, 1, N]`` of any length with memory bounded by the chunk size.

        Each chunk of ``chunk_seconds`` is encoded together with ``context_seconds`` of audio on
        both sides; the context frames are dropped. See the module docstring for how the codes
        compare with whole-file encoding.
        """
        wav = self._check_wav(wav)
        hop = self.hop_length
        chunk = max(1, int(round(chunk_seconds * self.sample_rate / hop))) * hop
        ctx = int(round(context_seconds * self.sample_rate / hop)) * hop
        n = wav.shape[-1]
        if n <= chunk + 2 * ctx:
            return self.encode(wav, n_q)
        out = []
        for start in range(0, n, chunk):
            lo, hi = max(0, start - ctx), min(n, start + chunk + ctx)
            codes = self.encode(wav[..., lo:hi], n_q)
            first = (start - lo) // hop
            frames = self.num_frames(min(chunk, n - start))
            out.append(codes[..., first: first + frames])
        return torch.cat(out, dim=-1)

    def decode_long(self, codes: torch.Tensor, chunk_frames: int = 1500, context_frames: int = 50) -> torch.Tensor:
        """Decode ``codes[B, K, T]`` in chunks (bounded memory), with context frames on each side."""
        if codes.dim() == 2:
            codes = codes[None]
        T = codes.shape[-1]
        if T <= chunk_frames + 2 * context_frames:
            return self.decode(codes)
        hop, lead_max = self.hop_length, self.decoder.carry_lead_frames()
        if 2 * context_frames < lead_max:
            raise DmttsError(f"decode_long needs context_frames >= {(lead_max + 1) // 2}, got {context_frames}")
        out, cycles, state = [], None, None
        for start in range(0, T, chunk_frames):
            lo, hi = max(0, start - context_frames), min(T, start + chunk_frames + context_frames)
            lead, next_start = min(lo, lead_max), start + chunk_frames
            first = (start - lo) * hop
            # the harmonic phase, the noise rotation's frame index and the LSTM state continue
            # from the previous chunk's window
            phase = HarmonicPhase.anchored(first, cycles, first_frame=lo)
            carry = LSTMCarry(state, lead, max(0, next_start - context_frames) - lo if next_start < T else None)
            wav = self.decode(codes[..., lo - lead:hi], phase=phase, carry=carry)
            out.append(wav[..., first: first + min(chunk_frames, T - start) * hop])
            cycles = phase.at((next_start - lo) * hop) if next_start < T else None
            state = carry.saved
        return torch.cat(out, dim=-1)

    # -- weight norm / export -------------------------------------------------------------------------
    def clone(self) -> "DMCodec":
        """An independent copy (``copy.deepcopy`` does not work on parametrised modules)."""
        other = DMCodec(self.config)
        if self.weight_norm_folded:
            other.fold_weight_norm()
        other.load_state_dict(self.state_dict())
        return other.to(next(self.parameters()).device).train(self.training)

    def fold_weight_norm(self) -> "DMCodec":
        fold_weight_norm(self)
        return self

    @property
    def weight_norm_folded(self) -> bool:
        return not has_weight_norm(self)

    def prepare_for_inference(self) -> "DMCodec":
        """eval mode, weight norm folded, no grads."""
        self.eval()
        self.fold_weight_norm()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def parameter_counts(self) -> dict[str, int]:
        def count(m: nn.Module, buffers: bool = False) -> int:
            n = sum(p.numel() for p in m.parameters())
            if buffers:  # the codebooks are buffers (EMA-updated), count their entries
                n += sum(l.embed.numel() for l in self.quantizer.layers)
            return n

        enc, dec = count(self.encoder), count(self.decoder)
        qnt = count(self.quantizer, buffers=True)
        return {"encoder": enc, "quantizer": qnt, "decoder": dec, "total": enc + qnt + dec}

    def save_pretrained(self, directory: str | Path, dtype: str = "float32", extra_config: dict | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (weight norm folded) atomically;
        ``dtype="float16"`` stores the weights in half precision (see ``storage_state``).
        ``extra_config``: metadata entries for ``config.json`` (keys of ``EXPORT_METADATA_KEYS``)."""
        unknown = sorted(set(extra_config or {}) - set(EXPORT_METADATA_KEYS))
        if unknown:
            raise ValueError(f"extra_config keys {unknown} are not export metadata ({EXPORT_METADATA_KEYS})")
        from safetensors.torch import save_file

        from dmtts.utils import storage_state

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self.clone().fold_weight_norm() if has_weight_norm(self) else self
        state = storage_state(model.state_dict(), dtype)
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "dmtts": "DMCodec"})
        atomic_write_text(directory / CONFIG_NAME, json.dumps(
            {"model_type": "dm-codec", **to_dict(self.config), **(extra_config or {})}, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "DMCodec":
        """Load an exported codec for inference (eval mode, weight norm folded)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        hint = "pass a directory written by `dmtts codec export` (config.json + model.safetensors)"
        if not directory.is_dir():
            raise DmttsError(f"codec model directory '{directory}' does not exist: {hint}")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise DmttsError(f"codec model directory '{directory}' has no {name}: {hint}")
        try:
            data = json.loads((directory / CONFIG_NAME).read_text())
        except json.JSONDecodeError as e:
            raise DmttsError(f"'{directory / CONFIG_NAME}' is not valid JSON: {e}") from None
        for key in EXPORT_METADATA_KEYS:
            data.pop(key, None)
        config = from_dict(CodecModelConfig, data)
        model = cls(config).fold_weight_norm()
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except Exception as e:
            raise DmttsError(f"cannot read '{directory / WEIGHTS_NAME}': {e}") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DmttsError(f"'{directory / WEIGHTS_NAME}' does not match its config.json "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.to(device).prepare_for_inference()


def load_semantic_projection(directory: str | Path) -> nn.Linear:
    """The ``dimension -> semantic_dimension`` projection an imported public model was distilled
    through (``dmtts codec import`` keeps it aside), as an ``nn.Linear`` in eval mode."""
    from safetensors.torch import load_file

    path = Path(directory) / SEMANTIC_PROJECTION_NAME
    if not path.is_file():
        raise DmttsError(f"'{directory}' has no {SEMANTIC_PROJECTION_NAME}: only a model imported with "
                         "`dmtts codec import` from a checkpoint with a transform projection has one")
    state = load_file(str(path))
    out_dim, in_dim = state["weight"].shape
    proj = nn.Linear(in_dim, out_dim)
    proj.load_state_dict(state)
    return proj.eval()


def load_codec(spec: str | Path, device: str | torch.device = "cpu") -> DMCodec:
    """A model directory, or ``preset:NAME`` for a randomly initialised preset (testing)."""
    spec = str(spec)
    if spec.startswith("preset:"):
        name = spec.split(":", 1)[1]
        if name not in PRESETS:
            raise DmttsError(f"unknown codec preset '{name}'; choose one of {', '.join(PRESETS)}")
        return DMCodec.from_preset(name).to(device).prepare_for_inference()
    return DMCodec.from_pretrained(spec, device)
