"""Discriminators: multi-period (MPD), multi-scale (MSD) and multi-scale STFT (MS-STFT).

MPD and MSD follow HiFi-GAN (Kong et al., 2020) with configurable (smaller) channel counts, as
the paper brings their parameter count closer to the MS-STFT discriminator; the ``official``
preset builds them at HiFi-GAN size (MSD layer layout from ``msd_layer_channels`` /
``msd_strides`` / ``msd_groups``, spectral norm instead of weight norm on the first MSD, as the
public code). MS-STFT follows EnCodec (real and imaginary STFT parts, 2-D convs dilated 1, 2, 4
in time, stride 2 in frequency, final 3x3 conv); ``stft_normalized`` divides the STFT by
``sqrt(sum(window^2))`` (torchaudio's ``Spectrogram(normalized=True)``, what EnCodec and the
public code use) and ``stft_center=False`` frames the signal without padding it. Every
sub-discriminator returns ``(logits, feature_maps)``; :class:`Discriminators` runs all of them
and returns flat lists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from dmtts.codec.config import DiscriminatorConfig

LRELU = 0.1


def _run_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor,
               slope: float = LRELU) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Conv stack with leaky ReLUs; returns the flattened logits and every feature map."""
    fmaps = []
    for conv in convs:
        x = F.leaky_relu(conv(x), slope)
        fmaps.append(x)
    x = post(x)
    fmaps.append(x)
    return x.flatten(1), fmaps


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: list[int], kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        chans = [1] + list(channels)
        pad = (kernel_size - 1) // 2
        convs = [weight_norm(nn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1), (stride, 1), (pad, 0)))
                 for i in range(len(channels))]
        convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (kernel_size, 1), 1, (pad, 0))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), mode="reflect" if t > n_pad else "constant")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _run_stack(self.convs, self.post, x)


def compact_msd_layout(channels: int, max_channels: int) -> tuple[list[int], list[int], list[int]]:
    """(channels, strides, groups) of the 4 grouped layers of the reduced MSD: stride 4, channels
    x4 per layer up to ``max_channels``, groups up to 64 dividing both sides."""
    outs, strides, groups = [], [], []
    c = channels
    for _ in range(4):
        nc = min(c * 4, max_channels)
        g = max(1, min(c // 4, nc // 4, 64))
        while c % g or nc % g:
            g -= 1
        outs.append(nc)
        strides.append(4)
        groups.append(g)
        c = nc
    return outs, strides, groups


class ScaleDiscriminator(nn.Module):
    """Conv1d(1 -> channels, k15) -> grouped Conv1d(k41) layers -> Conv1d(k5) -> Conv1d(-> 1, k3).

    ``layer_channels`` / ``strides`` / ``groups`` give the grouped layers (default: the compact
    layout of :func:`compact_msd_layout`); ``spectral=True`` normalises every conv with spectral
    norm instead of weight norm.
    """

    def __init__(self, channels: int = 16, max_channels: int = 1024, layer_channels=(), strides=(), groups=(),
                 spectral: bool = False):
        super().__init__()
        if not layer_channels:
            layer_channels, strides, groups = compact_msd_layout(channels, max_channels)
        norm = spectral_norm if spectral else weight_norm
        c = channels
        layers = [norm(nn.Conv1d(1, c, 15, 1, padding=7))]
        for nc, stride, g in zip(layer_channels, strides, groups):
            layers.append(norm(nn.Conv1d(c, nc, 41, stride, groups=g, padding=20)))
            c = nc
        layers.append(norm(nn.Conv1d(c, c, 5, 1, padding=2)))
        self.convs = nn.ModuleList(layers)
        self.post = norm(nn.Conv1d(c, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _run_stack(self.convs, self.post, x)


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, filters: int = 32, hop_length: int | None = None,
                 dilations: tuple[int, ...] = (1, 2, 4), max_filters: int = 1024, filters_scale: int = 1,
                 normalized: bool = False, center: bool = True):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length or n_fft // 4
        self.normalized, self.center = normalized, center
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [weight_norm(nn.Conv2d(2, filters, (3, 9), padding=(1, 4)))]
        in_ch = filters
        for i, d in enumerate(dilations):
            out_ch = min(filters_scale ** (i + 1) * filters, max_filters)
            convs.append(weight_norm(nn.Conv2d(in_ch, out_ch, (3, 9), stride=(1, 2), dilation=(d, 1),
                                               padding=(d, 4))))
            in_ch = out_ch
        convs.append(weight_norm(nn.Conv2d(in_ch, in_ch, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(in_ch, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``[B, F, T]`` of ``x[B, 1, N]`` (Hann window, hop n_fft / 4)."""
        spec = torch.stft(x.squeeze(1).float(), self.n_fft, self.hop_length, self.n_fft, window=self.window,
                          center=self.center, return_complex=True)
        if self.normalized:  # torchaudio's "window" normalisation, not torch.stft's 1/sqrt(n_fft)
            spec = spec / self.window.pow(2).sum().sqrt()
        return spec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = self.spectrogram(x)  # [B, F, T]
        z = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, T, F]
        return _run_stack(self.convs, self.post, z, 0.2)


class Discriminators(nn.Module):
    """All configured sub-discriminators; ``forward(wav)`` -> (list of logits, list of fmap lists)."""

    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        cfg = cfg or DiscriminatorConfig()
        self.mpd = nn.ModuleList(PeriodDiscriminator(p, cfg.mpd_channels) for p in cfg.mpd_periods) \
            if cfg.use_mpd else nn.ModuleList()
        self.msd = nn.ModuleList(
            ScaleDiscriminator(cfg.msd_channels, cfg.msd_max_channels, cfg.msd_layer_channels, cfg.msd_strides,
                               cfg.msd_groups, spectral=(i == 0 and cfg.msd_spectral_norm_first))
            for i in range(cfg.msd_scales)) if cfg.use_msd else nn.ModuleList()
        self.stft = nn.ModuleList(STFTDiscriminator(n, cfg.stft_filters, normalized=cfg.stft_normalized,
                                                    center=cfg.stft_center)
                                  for n in cfg.stft_n_ffts) if cfg.use_stft else nn.ModuleList()
        if len(self.mpd) + len(self.msd) + len(self.stft) == 0:
            from dmtts.errors import DmttsError

            raise DmttsError("discriminator config enables no discriminator (use_mpd/use_msd/use_stft)")

    def __len__(self) -> int:
        return len(self.mpd) + len(self.msd) + len(self.stft)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, fmaps = [], []
        for d in self.mpd:
            l, f = d(wav)
            logits.append(l)
            fmaps.append(f)
        x = wav
        for i, d in enumerate(self.msd):
            if i > 0:
                x = F.avg_pool1d(x, 4, 2, padding=2)
            l, f = d(x)
            logits.append(l)
            fmaps.append(f)
        for d in self.stft:
            l, f = d(wav)
            logits.append(l)
            fmaps.append(f)
        return logits, fmaps
