"""The ``official`` preset's differences from ``paper``/``tiny``, each a config key, each
checked against a hand computation: commitment mean over levels, HiFi-GAN-size MPD/MSD with
spectral norm on the first MSD, MS-STFT ``normalized=True, center=False``, and the public
rule for combining LM and SM distillation."""

import math

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from codec_helpers import micro_config
from dmtts.codec.config import training_config
from dmtts.codec.discriminators import Discriminators, STFTDiscriminator
from dmtts.codec.distill import Distiller
from dmtts.codec.losses import commitment_loss
from dmtts.codec.rvq import ResidualVectorQuantizer
from dmtts.errors import DmttsError


def test_official_values_and_other_presets_unchanged():
    off = training_config("official")
    assert off.loss.commitment_reduction == "mean" and not off.loss.commit_residual_gradient
    assert off.discriminator.mpd_channels == [32, 128, 512, 1024]
    assert off.discriminator.msd_spectral_norm_first
    assert off.discriminator.stft_normalized and not off.discriminator.stft_center
    assert (off.distill.combine, off.distill.lambda_lm, off.distill.lambda_sm) == ("sum", 0.5, 0.5)
    for name in ("paper", "tiny"):
        cfg = training_config(name)
        assert cfg.loss.commitment_reduction == "sum" and cfg.distill.combine == "half"
        assert cfg.loss.commit_residual_gradient
        d = cfg.discriminator
        assert not d.msd_spectral_norm_first and not d.stft_normalized and d.stft_center
        assert d.msd_layer_channels == d.msd_strides == d.msd_groups == []


def test_commitment_mean_over_levels_hand_computed():
    rvq = ResidualVectorQuantizer(dim=2, n_q=2, codebook_size=2, kmeans_init=False, threshold_ema_dead_code=0)
    rvq.layers[0].embed.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    rvq.layers[1].embed.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    rvq.eval()
    x = torch.tensor([[[1.0, 3.0], [2.0, 0.5]]])  # [B=1, D=2, T=2]: frames (1, 2) and (3, 0.5)
    # level 1: (1, 2) -> (0, 0), residual (1, 2), sq. error 5; (3, .5) -> (4, 0), residual (-1, .5), 1.25
    # level 2: (1, 2) -> (0, 1), sq. error 1 + 1 = 2; (-1, .5) is 1.25 from both entries: error 1.25
    level1 = (5.0 + 1.25) / 4  # mean over N * D = 4 elements
    level2 = (2.0 + 1.25) / 4
    out = rvq(x)
    assert out.commit_loss.item() == pytest.approx(level1 + level2)
    assert commitment_loss(out.commit_loss, 2, "sum").item() == pytest.approx(level1 + level2)
    assert commitment_loss(out.commit_loss, 2, "mean").item() == pytest.approx((level1 + level2) / 2)
    with pytest.raises(ValueError, match="sum' or 'mean"):
        commitment_loss(out.commit_loss, 2, "max")


@pytest.mark.parametrize("residual_gradient", [True, False])
def test_commitment_gradient_through_residuals_hand_computed(residual_gradient):
    """d/dx of sum_k mean((r_k - q_k)^2): every level reaches x when residuals keep their
    gradient (dmtts); only level 1 when they are detached (public code)."""
    rvq = ResidualVectorQuantizer(dim=2, n_q=2, codebook_size=2, kmeans_init=False, threshold_ema_dead_code=0)
    rvq.layers[0].embed.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    rvq.layers[1].embed.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    rvq.eval()
    rvq.residual_gradient = residual_gradient
    x = torch.tensor([[[1.0, 3.0], [2.0, 0.5]]], requires_grad=True)
    out = rvq(x)
    out.commit_loss.backward()
    # level 1 residual minus entry: (1, 2), (-1, .5); level 2: (1, 2) - (0, 1) = (1, 1), (-1, .5) - (0, 0)
    # d mean(e^2) / d x = 2 e / 4 per level
    level1 = torch.tensor([[1.0, -1.0], [2.0, 0.5]]) / 2
    level2 = torch.tensor([[1.0, -1.0], [1.0, 0.5]]) / 2
    expected = level1 + level2 if residual_gradient else level1
    torch.testing.assert_close(x.grad[0], expected)
    assert out.commit_loss.item() == pytest.approx((5 + 1.25) / 4 + (2 + 1.25) / 4)  # same value either way


def test_trainer_uses_the_commitment_reduction():
    from dmtts.codec.train import CodecTrainer

    stats = {}
    batch = {"audio": torch.randn(2, 1, 5120, generator=torch.Generator().manual_seed(3)) * 0.1,
             "lm_feats": None, "sm_feats": None}
    for reduction in ("sum", "mean"):
        cfg = micro_config(loss={"commitment_reduction": reduction}, train={"adversarial_start_step": 5})
        trainer = CodecTrainer(cfg, "unused-exp-dir")
        assert trainer.codec.quantizer.residual_gradient  # tiny: dmtts' rule
        stats[reduction] = trainer.train_step(batch)
    n_q = micro_config().model.n_q
    assert stats["mean"]["commit"] == pytest.approx(stats["sum"]["commit"] / n_q, rel=1e-5)


def _conv_shapes(module):
    return [tuple(c.weight.shape) for c in list(module.convs) + [module.post]]


def test_official_discriminators_are_hifigan_size_with_spectral_norm_first():
    disc = Discriminators(training_config("official").discriminator)
    # HiFi-GAN MSD (Kong et al. 2020, Table/appendix): k15 -> grouped k41 layers -> k5 -> post k3
    msd = [(128, 1, 15), (128, 32, 41), (256, 8, 41), (512, 16, 41), (1024, 32, 41), (1024, 64, 41),
           (1024, 1024, 5), (1, 1024, 3)]
    strides = [1, 2, 2, 4, 4, 1, 1, 1]
    for d in disc.msd:
        assert _conv_shapes(d) == msd
        assert [c.stride[0] for c in list(d.convs) + [d.post]] == strides
    # spectral norm on the first (full-rate) MSD only; weight norm elsewhere
    first = disc.msd[0].convs[0]
    assert "spectral" in type(first.parametrizations.weight[0]).__name__.lower()
    for d in list(disc.msd[1:]) + list(disc.mpd):
        assert "weight" in type(d.convs[0].parametrizations.weight[0]).__name__.lower()
    mpd = [(32, 1, 5, 1), (128, 32, 5, 1), (512, 128, 5, 1), (1024, 512, 5, 1), (1024, 1024, 5, 1), (1, 1024, 3, 1)]
    assert [p.period for p in disc.mpd] == [2, 3, 5, 7, 11]
    for d in disc.mpd:
        assert _conv_shapes(d) == mpd
    # spectral norm: the weight used is W / sigma_max(W) (each access in train mode runs one
    # power iteration; a few dozen converge)
    conv = disc.msd[0].convs[0]
    assert parametrize.is_parametrized(conv, "weight")
    disc.train()
    for _ in range(30):
        _ = conv.weight
    sigma = torch.linalg.matrix_norm(conv.parametrizations.weight.original.detach().reshape(128, -1), ord=2)
    effective = conv.weight.detach().reshape(128, -1)
    assert torch.linalg.matrix_norm(effective, ord=2).item() == pytest.approx(1.0, rel=1e-3)
    torch.testing.assert_close(effective * sigma, conv.parametrizations.weight.original.detach().reshape(128, -1),
                               rtol=1e-3, atol=1e-5)


def test_tiny_msd_layout_is_the_compact_one():
    d = Discriminators(training_config("tiny").discriminator).msd[0]
    # channels 8 -> x4 capped at 32; groups min(c // 4, nc // 4, 64) dividing both
    assert _conv_shapes(d) == [(8, 1, 15), (32, 4, 41), (32, 4, 41), (32, 4, 41), (32, 4, 41), (32, 32, 5),
                               (1, 32, 3)]


def _hand_stft(x: np.ndarray, n_fft: int, hop: int, normalized: bool) -> np.ndarray:
    """Frames without padding, periodic Hann window, one-sided DFT; ``normalized`` divides by
    sqrt(sum(window^2))."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    frames = [(x[s: s + n_fft] * window) for s in range(0, len(x) - n_fft + 1, hop)]
    k = np.arange(n_fft // 2 + 1)[:, None]
    basis = np.exp(-2j * np.pi * k * n[None] / n_fft)
    spec = np.stack([basis @ f for f in frames], axis=1)  # [F, T]
    return spec / np.sqrt((window ** 2).sum()) if normalized else spec


@pytest.mark.parametrize("normalized,center", [(True, False), (False, True)])
def test_stft_discriminator_input_hand_computed(normalized, center):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(70)
    d = STFTDiscriminator(16, filters=2, normalized=normalized, center=center)
    spec = d.spectrogram(torch.tensor(x, dtype=torch.float32)[None, None])[0].numpy()
    if center:  # torch.stft centre padding: n_fft // 2 reflected samples on each side
        x = np.pad(x, 8, mode="reflect")
    expected = _hand_stft(x, 16, 4, normalized)
    assert spec.shape == expected.shape == (9, (len(x) - 16) // 4 + 1)
    np.testing.assert_allclose(spec, expected, rtol=1e-4, atol=1e-5)
    if normalized:  # sum(hann^2) = 3N/8 for a periodic Hann window
        assert math.isclose(float(d.window.pow(2).sum()), 3 * 16 / 8, rel_tol=1e-6)


def test_distillation_combination_rules_hand_computed():
    torch.manual_seed(0)
    levels = [torch.randn(2, 6, 10) for _ in range(3)]
    lm, sm = torch.randn(2, 7, 5), torch.randn(2, 12, 4)
    totals, parts = {}, {}
    for combine in ("half", "sum"):
        cfg = micro_config(distill={"mode": "lm+sm", "lm_dim": 5, "sm_dim": 4, "lambda_lm": 0.8, "lambda_sm": 0.2,
                                    "combine": combine}).distill
        torch.manual_seed(1)  # same projections in both
        totals[combine], parts[combine] = Distiller(cfg, 6)(levels, lm, sm)
    l_lm, l_sm = parts["sum"]["distill_lm"], parts["sum"]["distill_sm"]
    assert parts["half"] == parts["sum"]
    assert totals["half"].item() == pytest.approx(0.5 * (0.8 * l_lm + 0.2 * l_sm), rel=1e-5)
    assert totals["sum"].item() == pytest.approx(0.8 * l_lm + 0.2 * l_sm, rel=1e-5)
    # one teacher: "half" weights it by its lambda, "sum" (public code) takes it as it is
    for combine, expected_factor in (("half", 0.8), ("sum", 1.0)):
        cfg = micro_config(distill={"mode": "lm", "lm_dim": 5, "lambda_lm": 0.8, "combine": combine}).distill
        torch.manual_seed(1)
        total, p = Distiller(cfg, 6)(levels, lm, None)
        assert total.item() == pytest.approx(expected_factor * p["distill_lm"], rel=1e-5)


def test_bad_official_keys_are_clear_errors():
    with pytest.raises(DmttsError, match="commitment_reduction"):
        training_config("paper", {"loss": {"commitment_reduction": "avg"}})
    with pytest.raises(DmttsError, match="distill.combine"):
        training_config("paper", {"distill": {"combine": "mean"}})
    with pytest.raises(DmttsError, match="same length"):
        training_config("paper", {"discriminator": {"msd_layer_channels": [64], "msd_strides": []}})
    with pytest.raises(DmttsError, match="groups do not divide"):
        training_config("paper", {"discriminator": {"msd_channels": 16, "msd_layer_channels": [30],
                                                    "msd_strides": [2], "msd_groups": [4]}})
