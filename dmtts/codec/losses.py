"""Codec training losses (paper eq. 4–10).

* ``waveform_l1`` (eq. 4): mean |x - x̂|.
* ``MultiScaleMelLoss`` (eq. 5): for every window 2^i (i = 5..11), hop 2^i / 4, 64 mel bins,
  ``mean|M(x) - M(x̂)| + mean((M(x) - M(x̂))^2)`` on log-mels from :func:`dmtts.audio.mel_spectrogram`
  (the L2 term is the mean squared error, as in EnCodec's implementation), summed over scales
  (optionally weighted per scale: the ``official`` preset uses 4 scales, 80 bins, L1 only,
  weights [45, 1, 1, 1]).
* Adversarial (eq. 6–7): hinge, ``mean(relu(1 - D(x̂)))`` for the generator and
  ``mean(relu(1 - D(x))) + mean(relu(1 + D(x̂)))`` for the discriminator, averaged over the N
  sub-discriminators; or LSGAN (``official``): ``mean((1 - D(x̂))^2)`` / ``mean((1 - D(x))^2) + mean(D(x̂)^2)``,
  summed over sub-discriminators as in the public code.
* Feature matching (eq. 8), relative: ``1/(NM) Σ_n Σ_m mean|R(x) - R(x̂)| / mean|R(x)|``; or
  ``l1`` (HiFi-GAN/public code): ``2 Σ_n Σ_m mean|R(x) - R(x̂)|``.
* ``MultiResolutionSTFTLoss`` (not in the paper; ``loss.stft_ffts`` / ``loss.lambda_stft``, off in
  every preset): linear-frequency spectral convergence + log-magnitude L1 over several FFT sizes.
* Commitment (eq. 9): the quantizer returns the sum over levels of each level's mean squared
  distance; :func:`commitment_loss` keeps the sum (paper) or takes the mean over levels (public
  code, ``loss.commitment_reduction: mean``). Distillation comes from :mod:`dmtts.codec.distill`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmtts.audio import mel_spectrogram
from dmtts.codec.config import LossConfig


def commitment_loss(level_sum: torch.Tensor, n_levels: int, reduction: str = "sum") -> torch.Tensor:
    """The RVQ commitment term from the quantizer's sum over ``n_levels`` levels: ``sum`` (paper
    eq. 9) or ``mean`` (the public code averages the per-level losses)."""
    if reduction == "sum":
        return level_sum.float()
    if reduction == "mean":
        return level_sum.float() / n_levels
    raise ValueError(f"commitment reduction must be 'sum' or 'mean', got {reduction!r}")


def waveform_l1(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    n = min(x.shape[-1], x_hat.shape[-1])
    return F.l1_loss(x_hat[..., :n].float(), x[..., :n].float())


class MultiScaleMelLoss(nn.Module):
    def __init__(self, sample_rate: int = 16000, windows=tuple(2 ** i for i in range(5, 12)), hops=(),
                 n_mels: int = 64, use_l2: bool = True, weights=(), f_max: float | None = None):
        super().__init__()
        self.sample_rate = sample_rate
        self.windows = list(windows)
        self.hops = list(hops) if hops else [w // 4 for w in self.windows]
        self.weights = list(weights) if weights else [1.0] * len(self.windows)
        self.n_mels, self.use_l2, self.f_max = n_mels, use_l2, f_max

    @classmethod
    def from_config(cls, cfg: LossConfig, sample_rate: int = 16000) -> "MultiScaleMelLoss":
        return cls(sample_rate, cfg.mel_windows, cfg.mel_hops, cfg.mel_bins, cfg.mel_l2, cfg.mel_scale_weights,
                   min(cfg.mel_fmax, sample_rate / 2))

    def mel(self, wav: torch.Tensor, i: int) -> torch.Tensor:
        w = self.windows[i]
        return mel_spectrogram(wav.squeeze(1).float(), self.sample_rate, n_fft=w, hop_length=self.hops[i],
                               win_length=w, n_mels=self.n_mels, f_max=self.f_max)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        n = min(x.shape[-1], x_hat.shape[-1])
        x, x_hat = x[..., :n], x_hat[..., :n]
        total = x.new_zeros((), dtype=torch.float32)
        for i, weight in enumerate(self.weights):
            a, b = self.mel(x, i), self.mel(x_hat, i)
            term = F.l1_loss(b, a)
            if self.use_l2:
                term = term + F.mse_loss(b, a)
            total = total + weight * term
        return total


class MultiResolutionSTFTLoss(nn.Module):
    """Linear-frequency STFT loss over several resolutions (Parallel WaveGAN, Yamamoto et al. 2020):
    per FFT size ``n`` (hop ``n // 4``, Hann window of ``n``), spectral convergence
    ``||S - Ŝ||_F / ||S||_F`` plus ``mean|log S - log Ŝ|`` on magnitudes; the mean over sizes.

    With a 2048-point FFT a bin is 7.8 Hz wide at 16 kHz, so single harmonics of a voice are
    resolved; the 64-bin mel loss pools them (one mel bin spans several harmonics above 1 kHz).
    """

    def __init__(self, n_ffts=(512, 1024, 2048)):
        super().__init__()
        self.n_ffts = list(n_ffts)
        for n in self.n_ffts:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def magnitude(self, wav: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = torch.stft(wav.squeeze(1).float(), n_fft, hop_length=n_fft // 4, window=getattr(self, f"window_{n_fft}"),
                          center=True, return_complex=True)
        # floor before the log: digital silence would give log(0)
        return spec.abs().clamp(min=1e-5)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        n = min(x.shape[-1], x_hat.shape[-1])
        x, x_hat = x[..., :n], x_hat[..., :n]
        total = x.new_zeros((), dtype=torch.float32)
        for n_fft in self.n_ffts:
            a, b = self.magnitude(x, n_fft), self.magnitude(x_hat, n_fft)
            convergence = torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a).clamp(min=1e-8)
            total = total + convergence + F.l1_loss(b.log(), a.log())
        return total / len(self.n_ffts)


def generator_adv_loss(fake_logits: list[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    if kind == "hinge":
        return sum(F.relu(1 - l.float()).mean() for l in fake_logits) / len(fake_logits)
    return sum(((1 - l.float()) ** 2).mean() for l in fake_logits)


def discriminator_adv_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor],
                           kind: str = "hinge") -> torch.Tensor:
    if kind == "hinge":
        return sum(F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean()
                   for r, f in zip(real_logits, fake_logits)) / len(real_logits)
    return sum(((1 - r.float()) ** 2).mean() + (f.float() ** 2).mean() for r, f in zip(real_logits, fake_logits))


def feature_matching_loss(real_fmaps: list[list[torch.Tensor]], fake_fmaps: list[list[torch.Tensor]],
                          kind: str = "relative") -> torch.Tensor:
    terms = []
    for real_d, fake_d in zip(real_fmaps, fake_fmaps):
        for r, f in zip(real_d, fake_d):
            r = r.detach().float()
            diff = (r - f.float()).abs().mean()
            terms.append(diff / r.abs().mean().clamp(min=1e-8) if kind == "relative" else diff)
    total = torch.stack(terms)
    return total.mean() if kind == "relative" else 2 * total.sum()
