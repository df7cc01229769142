"""SEANet encoder and decoder (DESIGN §5, paper appendix E).

Encoder: Conv1d(1->C, k7) -> B blocks [residual unit (k3 -> k1, with a skip) -> ELU -> strided
Conv1d(k=2S, stride S), channels doubling] -> 2-layer BiLSTM (with a skip) -> ELU -> Conv1d(->D, k7).
Decoder: the mirror: Conv1d(D->C*2^B, k7) -> LSTM (unidirectional, skip) -> B blocks [ELU ->
ConvTranspose1d(k=2S, stride S), channels halving -> residual unit] -> ELU -> Conv1d(C->1, k7).

Convolutions are weight-normalised (``torch.nn.utils.parametrizations.weight_norm``) during
training; :func:`fold_weight_norm` removes the parametrisation for inference so every forward
uses one plain weight tensor. Padding follows the EnCodec/SpeechTokenizer "SConv1d" rule (reflect
padding, extra right padding so that ``N`` samples give ``ceil(N / hop)`` frames), so the
parameter layout and the frame count match the public implementation: 1 s at 16 kHz -> 50 frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from dmtts.codec.periodic import HarmonicPhase, HarmonicPlusNoiseHead, ISTFTHead, activation as make_activation
from dmtts.codec.pitch import PitchPrediction


def _pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    if left == 0 and right == 0:
        return x
    if mode == "reflect":
        length = x.shape[-1]
        max_pad = max(left, right)
        if length <= max_pad:  # reflect needs pad < length: zero-extend first (as EnCodec)
            extra = max_pad - length + 1
            x = F.pad(x, (0, extra))
            return F.pad(x, (left, right), mode="reflect")[..., : x.shape[-1] + left + right - extra]
        return F.pad(x, (left, right), mode="reflect")
    return F.pad(x, (left, right))


class SConv1d(nn.Module):
    """Conv1d with 'same'-style padding that keeps ``ceil(N / stride)`` output frames."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 norm: bool = True, pad_mode: str = "reflect"):
        super().__init__()
        conv = nn.Conv1d(in_ch, out_ch, kernel_size, stride, dilation=dilation)
        self.conv = weight_norm(conv) if norm else conv
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, d = self.kernel_size, self.stride, self.dilation
        padding_total = (k - 1) * d - (s - 1)
        length = x.shape[-1]
        n_frames = (length - k + padding_total) / s + 1
        ideal = (math.ceil(n_frames) - 1) * s + (k - padding_total)
        extra = ideal - length
        right = padding_total // 2
        left = padding_total - right
        return self.conv(_pad1d(x, left, right + extra, self.pad_mode))


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed so that ``T`` frames give ``T * stride`` samples."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, norm: bool = True):
        super().__init__()
        conv = nn.ConvTranspose1d(in_ch, out_ch, kernel_size, stride)
        self.convtr = weight_norm(conv) if norm else conv
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        padding_total = self.kernel_size - self.stride
        right = padding_total // 2
        left = padding_total - right
        return y[..., left: y.shape[-1] - right]


class SLSTM(nn.Module):
    """LSTM over a ``[B, C, T]`` layout with a skip connection (bidirectional: input repeated)."""

    def __init__(self, dim: int, num_layers: int = 2, bidirectional: bool = False):
        super().__init__()
        self.bidirectional = bidirectional
        self.lstm = nn.LSTM(dim, dim, num_layers, bidirectional=bidirectional, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # [B, T, C]
        y, _ = self.lstm(xt)
        if self.bidirectional:
            xt = xt.repeat(1, 1, 2)
        return (y + xt).transpose(1, 2)

    def forward_packed(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Items ``[C, T_i]`` of different lengths in one packed LSTM call (no padding enters
        either direction); returns ``[C', T_i]`` per item, as :meth:`forward` on each alone."""
        from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

        seqs = [x.transpose(0, 1) for x in xs]  # [T_i, C]
        packed = pack_sequence(seqs, enforce_sorted=False)
        y, lengths = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        out = []
        for i, xt in enumerate(seqs):
            skip = xt.repeat(1, 2) if self.bidirectional else xt
            out.append((y[i, : int(lengths[i])] + skip).transpose(0, 1))
        return out

    def forward_carried(self, x: torch.Tensor, carry: "LSTMCarry") -> torch.Tensor:
        """:meth:`forward` starting from ``carry.state``; records the state after frame
        ``carry.save_at - 1`` in ``carry.saved`` (unidirectional only)."""
        if self.bidirectional:
            raise ValueError("a bidirectional LSTM's state cannot be carried between windows")
        xt = x.transpose(1, 2)  # [B, T, C]
        frames = xt.shape[1]
        cut = frames if carry.save_at is None else carry.save_at
        if not 0 <= cut <= frames:
            raise ValueError(f"LSTMCarry.save_at={carry.save_at} is outside the window's {frames} frames")
        parts, state = [], carry.state
        if cut > 0:
            y, state = self.lstm(xt[:, :cut], state)
            parts.append(y)
        if carry.save_at is not None:
            carry.saved = state
        if cut < frames:
            parts.append(self.lstm(xt[:, cut:], state)[0])
        return (torch.cat(parts, dim=1) + xt).transpose(1, 2)


@dataclass
class LSTMCarry:
    """Carries the decoder LSTM's state from one decode window to the next, so that decoding
    overlapping windows one after another (streaming, :meth:`DMCodec.decode_long`) equals one
    whole decode, however long the trained LSTM remembers.

    Without it each window's LSTM starts from zeros and has only the window's left context to
    warm up in; a trained decoder's LSTM can remember for seconds (docs/quality.md). With it:

    * ``state`` is the LSTM's state just before the window's first output frame, as a whole
      decode has it (``None``: zeros, the utterance start);
    * the window's first ``lead`` frames only give the convolutions before the LSTM their left
      context (``SEANetDecoder.carry_lead_frames``); the decode returns the audio of the frames
      after them;
    * the decode records in ``saved`` the state before output frame ``save_at`` of this window,
      where the next window will start. The LSTM's inputs up to there must be final: ``save_at``
      must lie ``carry_lead_frames`` or more before the window's end (or the window must end the
      utterance).
    """

    state: tuple[torch.Tensor, torch.Tensor] | None = None
    lead: int = 0
    save_at: int | None = None
    saved: tuple[torch.Tensor, torch.Tensor] | None = None


class ResidualUnit(nn.Module):
    """ELU -> conv(k, dim -> dim/compress) -> ELU -> conv(1, -> dim), plus a skip connection.

    ``true_skip=False`` makes the skip a 1x1 convolution, as in the public EnCodec /
    SpeechTokenizer / DM-Codec code (the default, so weights and FLOPs match those models).
    """

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2,
                 true_skip: bool = False, norm: bool = True, pad_mode: str = "reflect", act: str = "elu"):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            make_activation(act, dim),
            SConv1d(dim, hidden, kernel_size, dilation=dilation, norm=norm, pad_mode=pad_mode),
            make_activation(act, hidden),
            SConv1d(hidden, dim, 1, norm=norm, pad_mode=pad_mode),
        )
        self.shortcut = nn.Identity() if true_skip else SConv1d(dim, dim, 1, norm=norm, pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(nn.Module):
    def __init__(self, n_filters: int = 32, dimension: int = 1024, strides: Sequence[int] = (2, 4, 5, 8),
                 n_residual_layers: int = 1, residual_kernel_size: int = 3, dilation_base: int = 2,
                 lstm_layers: int = 2, kernel_size: int = 7, last_kernel_size: int = 7, compress: int = 2,
                 true_skip: bool = False, pad_mode: str = "reflect"):
        super().__init__()
        self.strides = list(strides)
        self.hop_length = int(math.prod(self.strides))
        mult = 1
        layers: list[nn.Module] = [SConv1d(1, n_filters, kernel_size, pad_mode=pad_mode)]
        for stride in self.strides:
            for j in range(n_residual_layers):
                layers.append(ResidualUnit(mult * n_filters, residual_kernel_size, dilation_base ** j,
                                           compress, true_skip, pad_mode=pad_mode))
            layers += [nn.ELU(), SConv1d(mult * n_filters, mult * n_filters * 2, 2 * stride, stride,
                                         pad_mode=pad_mode)]
            mult *= 2
        if lstm_layers:
            layers.append(SLSTM(mult * n_filters, lstm_layers, bidirectional=True))
            mult *= 2
        layers += [nn.ELU(), SConv1d(mult * n_filters, dimension, last_kernel_size, pad_mode=pad_mode)]
        self.model = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav[B, 1, N]`` -> latents ``[B, D, ceil(N / hop)]``."""
        return self.model(wav)

    def _parts(self) -> tuple[nn.Module, SLSTM | None, nn.Module]:
        """(convolutional front-end, the BiLSTM or None, what follows it)."""
        layers = list(self.model)
        i = next((i for i, l in enumerate(layers) if isinstance(l, SLSTM)), None)
        if i is None:
            return nn.Sequential(*layers[:-2]), None, nn.Sequential(*layers[-2:])
        return nn.Sequential(*layers[:i]), layers[i], nn.Sequential(*layers[i + 1:])

    def _front_chunked(self, front: nn.Module, wav: torch.Tensor, chunk_frames: int, halo_frames: int) -> torch.Tensor:
        """The front-end on one item ``wav[1, 1, N]``, chunk by chunk (see :meth:`forward_chunked`)."""
        hop, n = self.hop_length, wav.shape[-1]
        frames = math.ceil(n / hop)
        if chunk_frames <= 0 or frames <= chunk_frames + 2 * halo_frames:
            return front(wav)
        pieces = []
        for f0 in range(0, frames, chunk_frames):
            f1 = min(frames, f0 + chunk_frames)
            lo, hi = max(0, f0 - halo_frames), min(frames, f1 + halo_frames)
            y = front(wav[..., lo * hop: min(n, hi * hop)])
            pieces.append(y[..., f0 - lo: f1 - lo])
        return torch.cat(pieces, dim=-1)

    def forward_chunked(self, wav: torch.Tensor, chunk_frames: int = 50, halo_frames: int = 2) -> torch.Tensor:
        """Inference-only equivalent of :meth:`forward` that is kinder to CPU caches.

        The convolutional front-end (everything before the LSTM, receptive field about ±2
        frames) runs per batch item on chunks of ``chunk_frames`` frames with ``halo_frames`` of
        context on each side, so its activations stay in cache instead of streaming hundreds of
        MB through memory; the LSTM and the last convolution then run on the whole sequence.
        Chunk borders sit on frame boundaries, so the result equals :meth:`forward` up to float
        rounding.
        """
        frames = math.ceil(wav.shape[-1] / self.hop_length)
        if frames <= chunk_frames + 2 * halo_frames:
            return self.model(wav)
        front, lstm, back = self._parts()
        feats = torch.cat([self._front_chunked(front, wav[b: b + 1], chunk_frames, halo_frames)
                           for b in range(wav.shape[0])], dim=0)
        return back(lstm(feats) if lstm is not None else feats)

    def forward_unpadded(self, wavs: Sequence[torch.Tensor], chunk_frames: int = 0,
                         halo_frames: int = 2) -> list[torch.Tensor]:
        """Latents of items of different lengths, each as if encoded alone (GPU batching).

        ``wavs``: tensors ``[1, N_i]``; returns ``[D, T_i]`` per item. Zero-padding a batch is
        not exact: the backward LSTM would start in the padding, and the reflect padding of the
        convolutions would see zeros instead of the item's own end. Here the convolutions run
        per item on its own samples (chunked when ``chunk_frames > 0``, as :meth:`forward_chunked`
        does) and only the BiLSTM runs batched, on a packed sequence, so each item's result
        equals encoding it alone up to float rounding (the LSTM's matrix products see another
        batch size).
        """
        front, lstm, back = self._parts()
        feats = [self._front_chunked(front, w[None], chunk_frames, halo_frames)[0] for w in wavs]
        if lstm is not None:
            feats = lstm.forward_packed(feats)
        return [back(f[None])[0] for f in feats]


class SEANetDecoder(nn.Module):
    """The encoder's mirror; ``activation`` ``snake`` replaces every ELU, and ``head`` ``istft``
    replaces the last up-sampling blocks by an inverse STFT (:mod:`dmtts.codec.periodic`).

    With the iSTFT head the transposed convolutions run only until the frame hop reaches
    ``istft_hop`` (320, the codec's own hop, runs none), then ``istft_residual_layers`` dilated
    residual units (dilations 1, 3, 9, ...) at that rate, and the head: ``n_fft`` defaults to
    ``4 * istft_hop``.
    """

    def __init__(self, n_filters: int = 32, dimension: int = 1024, strides: Sequence[int] = (2, 4, 5, 8),
                 n_residual_layers: int = 1, residual_kernel_size: int = 3, dilation_base: int = 2,
                 lstm_layers: int = 2, kernel_size: int = 7, last_kernel_size: int = 7, compress: int = 2,
                 true_skip: bool = False, pad_mode: str = "reflect", activation: str = "elu",
                 head: str = "waveform", istft_hop: int = 320, istft_n_fft: int = 0,
                 istft_residual_layers: int = 3, sample_rate: int = 16000, harmonic_f0_min: float = 50.0,
                 harmonic_f0_max: float = 600.0, harmonic_envelope_bins: int = 129,
                 harmonic_noise_rotation: bool = False):
        super().__init__()
        up = list(reversed(list(strides)))  # decoder uses the encoder strides reversed: (8, 5, 4, 2)
        self.hop_length = int(math.prod(up))
        if head in ("istft", "harmonic"):
            up = _upsampling_until(up, self.hop_length, istft_hop)
        act = activation
        mult = 2 ** len(list(strides))
        layers: list[nn.Module] = [SConv1d(dimension, mult * n_filters, kernel_size, pad_mode=pad_mode)]
        if lstm_layers:
            layers.append(SLSTM(mult * n_filters, lstm_layers, bidirectional=False))
        for stride in up:
            layers += [make_activation(act, mult * n_filters),
                       SConvTranspose1d(mult * n_filters, mult * n_filters // 2, 2 * stride, stride)]
            for j in range(n_residual_layers):
                layers.append(ResidualUnit(mult * n_filters // 2, residual_kernel_size, dilation_base ** j,
                                           compress, true_skip, pad_mode=pad_mode, act=act))
            mult //= 2
        if head in ("istft", "harmonic"):
            width = mult * n_filters
            for j in range(istft_residual_layers):
                layers.append(ResidualUnit(width, residual_kernel_size, 3 ** j, compress, true_skip,
                                           pad_mode=pad_mode, act=act))
            n_fft = istft_n_fft or 4 * istft_hop
            out = (ISTFTHead(width, n_fft, istft_hop) if head == "istft" else
                   HarmonicPlusNoiseHead(width, n_fft, istft_hop, sample_rate, harmonic_f0_min, harmonic_f0_max,
                                         harmonic_envelope_bins, harmonic_noise_rotation))
            layers += [make_activation(act, width), out]
        elif head == "waveform":
            layers += [make_activation(act, n_filters), SConv1d(n_filters, 1, last_kernel_size, pad_mode=pad_mode)]
        else:
            raise ValueError(f"decoder head must be 'waveform', 'istft' or 'harmonic', got {head!r}")
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, phase: HarmonicPhase | None = None,
                carry: LSTMCarry | None = None) -> torch.Tensor:
        """``z[B, D, T]`` -> ``wav[B, 1, T * hop]``; ``phase`` carries the harmonic head's
        oscillators across windows (:class:`HarmonicPhase`; other heads have no phase), ``carry``
        the LSTM's state (:class:`LSTMCarry`; the output then starts after ``carry.lead`` frames)."""
        h, rest = self._trunk(z, carry)
        head = rest[-1]
        if phase is not None and isinstance(head, HarmonicPlusNoiseHead):
            return head(rest[:-1](h), phase)
        return rest(h)

    def _lstm_index(self) -> int | None:
        return next((i for i, layer in enumerate(self.model) if isinstance(layer, SLSTM)), None)

    def carry_lead_frames(self) -> int:
        """Frames of codes before a window's first output frame that a carried window
        (:class:`LSTMCarry`) needs: the left reach of the convolutions before the LSTM (3 with the
        input convolution's kernel of 7)."""
        i = self._lstm_index()
        first = self.model[: 1 if i is None else i]
        convs = [m for m in first.modules() if isinstance(m, SConv1d)]
        return sum((c.kernel_size - 1) * c.dilation - ((c.kernel_size - 1) * c.dilation) // 2 for c in convs)

    def _trunk(self, z: torch.Tensor, carry: LSTMCarry | None) -> tuple[torch.Tensor, nn.Sequential]:
        """Without ``carry``: ``(z, all layers)``. With it: the layers up to the LSTM run on the
        window, the ``carry.lead`` frames are dropped, the LSTM runs from the carried state;
        returns that output and the layers after the LSTM."""
        if carry is None:
            return z, self.model
        i = self._lstm_index()
        cut = 1 if i is None else i
        h = self.model[:cut](z)[..., carry.lead:]
        if i is None:
            return h, self.model[cut:]
        return self.model[i].forward_carried(h, carry), self.model[i + 1:]

    def forward_with_pitch(self, z: torch.Tensor) -> tuple[torch.Tensor, PitchPrediction | None]:
        """:meth:`forward` plus the harmonic head's F0 and voicing prediction (``None`` for the
        other heads), which training supervises."""
        head = self.model[-1]
        if not isinstance(head, HarmonicPlusNoiseHead):
            return self.model(z), None
        return head.forward_with_pitch(self.model[:-1](z))

    def lookahead_frames(self) -> int:
        """How many frames after a sample's own frame the decoded sample depends on: the right
        half of every non-causal convolution's reach, at the rate it runs, plus the heads'
        (half an iSTFT window; one frame for the harmonics' interpolation). Decoding a window
        that ends this many frames after a chunk decodes the chunk exactly (streaming)."""
        step, reach = self.hop_length, 0  # samples per position at the current layer; samples ahead
        for layer in self.model:
            if isinstance(layer, SConvTranspose1d):
                left = (layer.kernel_size - layer.stride) - (layer.kernel_size - layer.stride) // 2
                reach += math.ceil(left / layer.stride) * step
                step //= layer.stride
            elif isinstance(layer, HarmonicPlusNoiseHead):
                reach += max((layer.noise.n_fft - layer.noise.hop) // 2, layer.hop)
            elif isinstance(layer, ISTFTHead):
                reach += (layer.n_fft - layer.hop) // 2
            else:
                convs = [m for m in layer.modules() if isinstance(m, SConv1d)]
                reach += sum(((c.kernel_size - 1) * c.dilation - (c.stride - 1)) // 2 for c in convs) * step
        return math.ceil(reach / self.hop_length)

    def forward_chunked(self, z: torch.Tensor, chunk_frames: int = 50, halo_frames: int = 2,
                        phase: HarmonicPhase | None = None, carry: LSTMCarry | None = None) -> torch.Tensor:
        """Inference-only equivalent of :meth:`forward`: the up-sampling stack after the LSTM
        (receptive field about ±2 frames) runs per batch item on chunks with a halo; see
        :meth:`SEANetEncoder.forward_chunked`."""
        layers = list(self.model)
        frames = z.shape[-1] - (carry.lead if carry is not None else 0)
        # the iSTFT decoder works at (or near) the frame rate, where chunking saves nothing, and its
        # dilated residual units see further than a 2-frame halo
        if frames <= chunk_frames + 2 * halo_frames or any(isinstance(l, (ISTFTHead, HarmonicPlusNoiseHead)) for l in layers):
            return self.forward(z, phase, carry)
        h, tail = self._trunk(z, carry or LSTMCarry())  # split after the LSTM (zeros: a fresh start)
        hop = self.hop_length
        outs = []
        for b in range(h.shape[0]):
            pieces = []
            for f0 in range(0, frames, chunk_frames):
                f1 = min(frames, f0 + chunk_frames)
                lo, hi = max(0, f0 - halo_frames), min(frames, f1 + halo_frames)
                y = tail(h[b: b + 1, :, lo:hi])
                pieces.append(y[..., (f0 - lo) * hop: (f1 - lo) * hop])
            outs.append(torch.cat(pieces, dim=-1))
        return torch.cat(outs, dim=0)


def _upsampling_until(up: list[int], hop: int, istft_hop: int) -> list[int]:
    """The prefix of the decoder's up-sampling strides that brings the frame hop from ``hop`` down
    to ``istft_hop`` (e.g. strides (8, 5, 4, 2), hop 320: istft_hop 320 -> [], 40 -> [8], 8 -> [8, 5])."""
    strides, current = [], hop
    for stride in up:
        if current == istft_hop:
            break
        strides.append(stride)
        current //= stride
    if current != istft_hop:
        raise ValueError(f"istft_hop {istft_hop} is not reached by the decoder strides {up} from hop {hop}: "
                         f"use one of {_reachable_hops(up, hop)}")
    return strides


def _reachable_hops(up: list[int], hop: int) -> list[int]:
    hops = [hop]
    for stride in up:
        hops.append(hops[-1] // stride)
    return hops


@torch.no_grad()
def scaled_conv_init_(module: nn.Module) -> nn.Module:
    """Variance-preserving init of every (transposed) convolution: N(0, 1/fan_in), zero bias.

    With PyTorch's default init (variance 1/(3 fan_in)) the time-varying part of the signal
    shrinks about 2x per encoder layer: on speech the latent's std over time starts ~30x below
    its per-channel offsets (the biases), the RVQ sees a near-constant input and short runs
    learn a handful of codes. Here every layer keeps the signal's scale. Works with weight norm
    (the parametrisation's g is reset to the new weight's norm).
    """
    for mod in module.modules():
        if not isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d)):
            continue
        parametrized = hasattr(mod, "parametrizations") and "weight" in mod.parametrizations
        weight = mod.parametrizations.weight.original1 if parametrized else mod.weight
        k = mod.kernel_size[0]
        if isinstance(mod, nn.ConvTranspose1d):
            fan_in = mod.in_channels * k / mod.stride[0]  # inputs feeding one output sample
        else:
            fan_in = mod.in_channels // mod.groups * k
        weight.normal_(0.0, fan_in ** -0.5)
        if mod.bias is not None:
            mod.bias.zero_()
        if parametrized:
            dims = tuple(range(1, weight.dim()))
            mod.parametrizations.weight.original0.copy_(torch.linalg.vector_norm(weight, dim=dims, keepdim=True))
    for mod in module.modules():  # output layers with their own starting scale (the harmonic head)
        if isinstance(mod, HarmonicPlusNoiseHead):
            mod.init_output_layers_()
    return module


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrisation by its current plain weight (in place).

    After folding, a forward pass computes exactly what it computed before (same weight values)
    but without recomputing ``g * v / ||v||`` on every call. Returns ``module``.
    """
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
    return module


def has_weight_norm(module: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m, "weight") for m in module.modules())
