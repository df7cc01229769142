"""Decoder pieces with a bias towards periodic signals (issue 16: a codec with pitch).

* :class:`Snake`: ``x + sin²(αx) / α`` with a learned ``α`` per channel (Liu Ziyin et al. 2020;
  used by BigVGAN and DAC). ELU has no periodic component, so an ELU decoder must build every
  harmonic from piecewise-linear pieces; Snake gives each channel an oscillation whose frequency
  the network learns.
* :class:`ISTFTHead`: the decoder predicts a log-magnitude and a phase per STFT bin and frame, and
  an inverse STFT makes the waveform (Vocos / WavTokenizer style). The network then works at the
  frame rate instead of up-sampling to 16 kHz with transposed convolutions, which is where the
  fixed-frequency "decoder tones" of the waveform head come from, and harmonics are single bins
  of a spectrum rather than patterns of samples.
* :class:`HarmonicPlusNoiseHead`: a source-filter head. Harmonics at a predicted F0, shaped by a
  predicted spectral envelope, plus the iSTFT head for the aperiodic rest; pitch is a quantity
  the decoder predicts and is taught (:mod:`dmtts.codec.pitch`), not a pattern it must discover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dmtts.codec.pitch import PitchPrediction
from dmtts.utils import fp32_region


class Snake(nn.Module):
    """``x + sin²(αx) / α`` per channel of a ``[B, C, T]`` input; ``α`` starts at 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        # 1e-9 keeps a channel whose α was driven to 0 finite (its limit is x + 0)
        return x + torch.sin(alpha * x).pow(2) / (alpha + 1e-9)


def activation(kind: str, channels: int) -> nn.Module:
    """The decoder's non-linearity: ``elu`` (SEANet, the paper) or ``snake``."""
    if kind == "elu":
        return nn.ELU()
    if kind == "snake":
        return Snake(channels)
    raise ValueError(f"activation must be 'elu' or 'snake', got {kind!r}")


class ISTFTHead(nn.Module):
    """``features[B, C, T]`` -> ``wav[B, 1, T * hop]`` through a predicted STFT.

    A 1x1 convolution gives ``n_fft // 2 + 1`` log-magnitudes and as many phases per frame; the
    waveform is the windowed inverse FFT of every frame, overlap-added and divided by the
    summed squared window, with ``(n_fft - hop) / 2`` samples trimmed at both ends ("same"
    padding), so ``T`` frames give exactly ``T * hop`` samples and frame ``t`` is centred on
    samples ``[t * hop, (t + 1) * hop)``, the span the encoder's frame ``t`` summarises.

    ``rotate`` (for the aperiodic part of :class:`HarmonicPlusNoiseHead`) adds one pseudo-random
    angle per frame to every bin's phase. Where the predicted frames repeat (nothing constrains
    their phase without a waveform loss), the overlap-added output repeats with the hop: a comb
    of stationary lines at multiples of the frame rate (50 Hz), the "fixed-frequency lines" of
    issue 16. A rotation common to all bins keeps each frame's group delay, hence where its
    energy sits in time (transients), and makes consecutive frames incoherent, so no comb can
    form. Training draws the angles afresh (the decoder cannot learn to rely on them);
    inference reads them from a fixed table by absolute frame index (``first_frame`` + t), so
    decoding is deterministic and windows of one signal decoded apart agree (streaming).
    """

    ROTATION_TABLE_FRAMES = 4096  # 82 s at 50 Hz before the angles repeat
    ROTATION_SEED = 20261203

    def __init__(self, channels: int, n_fft: int, hop: int, max_log_magnitude: float = 6.0, rotate: bool = False):
        super().__init__()
        if n_fft < hop or (n_fft - hop) % 2:
            raise ValueError(f"iSTFT head: n_fft ({n_fft}) must be >= hop ({hop}) and n_fft - hop even")
        self.n_fft, self.hop = n_fft, hop
        self.bins = n_fft // 2 + 1
        self.proj = nn.Conv1d(channels, 2 * self.bins, 1)
        self.max_log_magnitude = max_log_magnitude
        self.rotate = rotate
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        if rotate:
            table = torch.rand(self.ROTATION_TABLE_FRAMES, generator=torch.Generator().manual_seed(self.ROTATION_SEED))
            self.register_buffer("rotation_table", 2 * math.pi * table.double(), persistent=False)

    def rotation(self, batch: int, frames: int, first_frame: int, device: torch.device) -> torch.Tensor:
        """``[B or 1, 1, T]`` angles: uniform draws in training, else the table from ``first_frame``."""
        if self.training:
            return 2 * math.pi * torch.rand(batch, 1, frames, device=device)
        index = (first_frame + torch.arange(frames, device=device)) % self.ROTATION_TABLE_FRAMES
        return self.rotation_table.to(device)[index].float()[None, None]

    def spectrum(self, x: torch.Tensor, first_frame: int = 0) -> torch.Tensor:
        """Complex STFT ``[B, n_fft // 2 + 1, T]`` the head predicts from ``x[B, C, T]``; with
        ``rotate``, frame ``t`` is frame ``first_frame + t`` of the signal."""
        log_mag, phase = self.proj(x).float().chunk(2, dim=1)
        if self.rotate:
            phase = phase + self.rotation(x.shape[0], x.shape[-1], first_frame, x.device)
        # clamped: exp of an untrained projection can overflow; e^6 is far above speech's range
        magnitude = torch.exp(log_mag.clamp(max=self.max_log_magnitude))
        return torch.polar(magnitude, phase)

    def forward(self, x: torch.Tensor, first_frame: int = 0) -> torch.Tensor:
        return istft_same(self.spectrum(x, first_frame), self.n_fft, self.hop, self.window)


def istft_same(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse of a "same"-padded STFT: ``spec[B, n_fft // 2 + 1, T]`` -> ``wav[B, 1, T * hop]``.

    Frame ``t`` is the windowed FFT of samples ``[t * hop - pad, t * hop - pad + n_fft)`` with
    ``pad = (n_fft - hop) / 2`` (zeros outside the signal); overlap-add of the windowed inverse
    FFTs divided by the summed squared window inverts it exactly wherever a frame covers.
    """
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # [B, n_fft, T]
    t = frames.shape[-1]
    length = (t - 1) * hop + n_fft
    wav = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
    envelope = F.fold(window.pow(2)[None, :, None].expand(1, -1, t), output_size=(1, length),
                      kernel_size=(1, n_fft), stride=(1, hop))
    pad = (n_fft - hop) // 2
    wav = wav[..., pad: length - pad] / envelope[..., pad: length - pad].clamp(min=1e-8)
    return wav.reshape(spec.shape[0], 1, t * hop)


@dataclass
class HarmonicPhase:
    """Keeps the harmonic head's oscillators continuous across separate decodes of overlapping
    windows (streaming, :meth:`DMCodec.decode_long`).

    A decode starts its running phase at the window's first sample, so two windows that overlap
    disagree on the phase of the same harmonics, and joining them (cross-fade or cut) mixes two
    phases: comb filtering and clicks. Pass one of these to ``decode``: the head shifts its cycle
    count so that sample ``anchor_sample`` of this window has ``anchor_cycles`` (read from the
    previous window with :meth:`at`), and records the window's cycle count in ``cycles``. With the
    anchor where both windows' F0 is exact, the joined audio equals one whole decode. Decoders
    without the harmonic head leave ``cycles`` at ``None`` and ignore the anchor.

    ``first_frame`` is the signal's frame index of the window's first output frame: a head with
    the aperiodic part's phase rotation (:class:`ISTFTHead` ``rotate``) reads its angles from there.
    """

    anchor_sample: int | None = None
    anchor_cycles: torch.Tensor | None = None  # [B] float64
    cycles: torch.Tensor | None = None  # [B, N] float64, filled by the decode
    first_frame: int = 0

    def at(self, sample: int) -> torch.Tensor | None:
        """The cycle count at ``sample`` of the last decode (``None`` without a harmonic head)."""
        return None if self.cycles is None else self.cycles[:, sample]

    @classmethod
    def anchored(cls, sample: int, cycles: torch.Tensor | None, first_frame: int = 0) -> "HarmonicPhase":
        """A phase for the next window, anchored at its ``sample`` (no anchor if ``cycles`` is
        ``None``: the first window, or a decoder without harmonics); the window's first output
        frame is frame ``first_frame`` of the signal."""
        return cls(sample if cycles is not None else None, cycles, first_frame=first_frame)


class HarmonicPlusNoiseHead(nn.Module):
    """``features[B, C, T]`` -> ``wav[B, 1, T * hop]``: harmonics at a predicted F0 plus an iSTFT
    for everything aperiodic (a source-filter decoder, as sinusoidal codecs such as codec2 are).

    Per frame, 1x1 convolutions predict:

    * ``f0`` in ``[f0_min, f0_max]`` Hz (a sigmoid on a log scale) and a voicing logit; both are
      taught from YIN targets (:mod:`dmtts.codec.pitch`), because spectral losses give F0 no
      useful gradient. The synthesis uses the F0 detached, so only that supervision moves it;
    * a log-amplitude spectral envelope on ``envelope_bins`` linear frequencies from 0 to
      Nyquist. Harmonic ``k`` gets the envelope's value at ``k * f0`` (linear interpolation)
      times the voicing probability: the envelope is the filter, the harmonics the source, so a
      pitch the decoder never heard still gets a plausible spectrum;
    * the iSTFT head's magnitude and phase (:class:`ISTFTHead`), which carries the noise,
      the transients and whatever the harmonics miss (``noise_rotation``: with a pseudo-random
      rotation per frame, so it cannot form a comb at the frame rate).

    The harmonics are summed sinusoids at the sample rate: frame values sit at frame centres and
    are interpolated linearly between them, the phase is the running sum of F0 (kept modulo one
    cycle in float64, so ``k * phase`` stays exact for every harmonic), and harmonics at or above
    Nyquist are silenced. Their phase is free-running, not the input's: train with spectral
    losses, not the waveform L1 (``loss.lambda_wav: 0``).
    """

    def __init__(self, channels: int, n_fft: int, hop: int, sample_rate: int, f0_min: float = 50.0,
                 f0_max: float = 600.0, envelope_bins: int = 129, noise_rotation: bool = False):
        super().__init__()
        if not 0 < f0_min < f0_max < sample_rate / 2:
            raise ValueError(f"harmonic head: need 0 < f0_min ({f0_min}) < f0_max ({f0_max}) < Nyquist")
        self.hop, self.sample_rate = hop, sample_rate
        self.f0_min, self.f0_max = f0_min, f0_max
        self.n_harmonics = int(sample_rate / 2 // f0_min)
        self.noise = ISTFTHead(channels, n_fft, hop, rotate=noise_rotation)
        self.pitch = nn.Conv1d(channels, 2, 1)
        self.envelope = nn.Conv1d(channels, envelope_bins, 1)
        self.init_output_layers_()
        self.register_buffer("harmonic_numbers", torch.arange(1, self.n_harmonics + 1, dtype=torch.float32),
                             persistent=False)

    @torch.no_grad()
    def init_output_layers_(self) -> None:
        """Start quiet (harmonics of amplitude ~0.01 rather than ~1) and with F0 and voicing off
        the flat ends of their sigmoids (F0 at the range's geometric centre, voicing 0.5): the
        trunk's features are large at initialisation, and a saturated sigmoid gives the pitch
        losses no gradient. Whole-model inits (:func:`dmtts.codec.seanet.scaled_conv_init_`)
        call this again after theirs."""
        self.envelope.weight.mul_(0.1)
        self.envelope.bias.fill_(-4.5)
        self.pitch.weight.mul_(0.01)
        self.pitch.bias.zero_()

    def predict_pitch(self, x: torch.Tensor) -> PitchPrediction:
        f0_raw, voicing_logit = self.pitch(x).float().unbind(1)
        log_range = math.log(self.f0_max / self.f0_min)
        return PitchPrediction(f0=self.f0_min * torch.exp(torch.sigmoid(f0_raw) * log_range),
                               voicing_logit=voicing_logit)

    def harmonic_amplitudes(self, x: torch.Tensor, f0: torch.Tensor, voicing: torch.Tensor) -> torch.Tensor:
        """``[B, K, T]`` amplitudes: the envelope sampled at ``k * f0``, times voicing, 0 at or above Nyquist."""
        log_env = self.envelope(x).float().clamp(max=2.0)  # [B, E, T]
        bins = log_env.shape[1]
        freqs = self.harmonics_below_nyquist(f0)[None, :, None] * f0[:, None, :]  # [B, K, T]
        pos = (freqs / (self.sample_rate / 2) * (bins - 1)).clamp(0, bins - 1)
        lo = pos.floor().long().clamp(max=bins - 2)
        frac = pos - lo
        env = torch.lerp(log_env.gather(1, lo), log_env.gather(1, lo + 1), frac)
        audible = freqs < self.sample_rate / 2
        return torch.exp(env) * voicing[:, None, :] * audible

    def harmonics_below_nyquist(self, f0: torch.Tensor) -> torch.Tensor:
        """Harmonic numbers ``1..K`` with ``K`` what the lowest F0 of the batch needs (the rest
        would be silenced anyway): a 120 Hz voice costs 66 sinusoids, not 160."""
        needed = math.ceil(self.sample_rate / 2 / max(float(f0.min()), self.f0_min))
        return self.harmonic_numbers[: min(needed, self.n_harmonics)]

    def forward_with_pitch(self, x: torch.Tensor, phase: HarmonicPhase | None = None,
                           ) -> tuple[torch.Tensor, PitchPrediction]:
        pitch = self.predict_pitch(x)
        f0 = pitch.f0.detach()
        amplitudes = self.harmonic_amplitudes(x, f0, torch.sigmoid(pitch.voicing_logit))
        harmonics = harmonic_synthesis(f0, amplitudes, self.hop, self.sample_rate,
                                       self.harmonic_numbers[: amplitudes.shape[1]], phase)
        return harmonics + self.noise(x, phase.first_frame if phase is not None else 0), pitch

    def forward(self, x: torch.Tensor, phase: HarmonicPhase | None = None) -> torch.Tensor:
        return self.forward_with_pitch(x, phase)[0]


def harmonic_synthesis(f0: torch.Tensor, amplitudes: torch.Tensor, hop: int, sample_rate: int,
                       harmonic_numbers: torch.Tensor, phase: HarmonicPhase | None = None) -> torch.Tensor:
    """``Σ_k a_k(n) sin(k φ(n))`` with ``φ`` the running phase of ``f0``: ``f0[B, T]`` Hz and
    ``amplitudes[B, K, T]`` per frame (values at frame centres, linear in between, as
    ``F.interpolate(mode="linear")``) -> ``wav[B, 1, T * hop]``.

    Only the amplitudes carry gradients (the F0 is taught by its own loss), so the ``K x N``
    sines are computed once without autograd, and the amplitudes are never up-sampled to the
    sample rate: between two frame centres the output is ``(1 - w) Σ_k s_k a_k[t] + w Σ_k s_k
    a_k[t + 1]``, one batched matrix product per segment. The sum is the same as up-sampling the
    amplitudes and multiplying; forward + backward take 0.04 s instead of 0.14 s for a batch of
    8 x 1 s at 160 harmonics (``benchmarks/harmonic_synthesis.py``).

    ``phase`` (optional) anchors the running phase and receives it (:class:`HarmonicPhase`).
    """
    batch, n_harmonics, frames = amplitudes.shape
    n = frames * hop
    shift = hop // 2  # first sample at or past frame 0's centre ((n + 0.5) / hop - 0.5 >= 0)
    lead = hop - shift  # samples before that, in segment 0, with the first frame's amplitudes
    with torch.no_grad():
        f0_samples = F.interpolate(f0[:, None].float(), scale_factor=hop, mode="linear", align_corners=False)
        cycles = torch.cumsum(f0_samples[:, 0].double() / sample_rate, dim=-1)  # [B, N]
        if phase is not None:
            if phase.anchor_sample is not None:
                at = cycles[:, phase.anchor_sample]
                cycles = cycles + (phase.anchor_cycles.to(cycles) - at)[:, None]
            phase.cycles = cycles
        radians = (2 * math.pi * torch.frac(cycles)).float()  # exact modulo one cycle
        # segment j (0..T) covers the samples between frame centres j - 1 and j
        radians = F.pad(radians, (lead, shift)).view(batch * (frames + 1), hop, 1)
        sines = torch.sin_(radians * harmonic_numbers.float())  # [B * (T + 1), hop, K]
        w = (torch.arange(hop, device=f0.device, dtype=torch.float32) + 0.5 + shift - hop / 2) / hop
    # amplitudes at each segment's two ends; the edges hold the first and last frames' values
    padded = torch.cat([amplitudes[..., :1], amplitudes, amplitudes[..., -1:]], dim=-1).float()
    ends = torch.stack([padded[..., :-1], padded[..., 1:]], dim=-1)  # [B, K, T + 1, 2]
    ends = ends.permute(0, 2, 1, 3).reshape(batch * (frames + 1), n_harmonics, 2)
    # fp32 also inside a bf16 autocast region: a sum of up to 160 sinusoids in bf16's 8-bit
    # mantissa would add quantisation noise of about -50 dB to every voiced sample
    with fp32_region(sines):
        left, right = torch.bmm(sines, ends).unbind(-1)  # [B * (T + 1), hop] each
    wav = torch.lerp(left, right, w).reshape(batch, 1, -1)
    return wav[..., lead:lead + n]
