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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    """

    def __init__(self, channels: int, n_fft: int, hop: int, max_log_magnitude: float = 6.0):
        super().__init__()
        if n_fft < hop or (n_fft - hop) % 2:
            raise ValueError(f"iSTFT head: n_fft ({n_fft}) must be >= hop ({hop}) and n_fft - hop even")
        self.n_fft, self.hop = n_fft, hop
        self.bins = n_fft // 2 + 1
        self.proj = nn.Conv1d(channels, 2 * self.bins, 1)
        self.max_log_magnitude = max_log_magnitude
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``[B, n_fft // 2 + 1, T]`` the head predicts from ``x[B, C, T]``."""
        log_mag, phase = self.proj(x).float().chunk(2, dim=1)
        # clamped: exp of an untrained projection can overflow; e^6 is far above speech's range
        magnitude = torch.exp(log_mag.clamp(max=self.max_log_magnitude))
        return torch.polar(magnitude, phase)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return istft_same(self.spectrum(x), self.n_fft, self.hop, self.window)


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
