"""Decoder options for periodic structure (issue 16): Snake, the iSTFT head, the linear STFT
loss, the cosine floor, and the capped-run record."""

import math

import pytest
import torch

from dmtts.codec.config import training_config
from dmtts.codec.losses import MultiResolutionSTFTLoss
from dmtts.codec.model import DMCodec
from dmtts.codec.periodic import ISTFTHead, Snake, istft_same
from dmtts.codec.train_report import cap_forecast, cosine_lr_fraction, run_record
from dmtts.errors import DmttsError


def test_snake_matches_its_formula():
    snake = Snake(2)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1))
    x = torch.tensor([[[0.5, -1.0], [0.5, 3.0]]])
    expected = torch.tensor([[[0.5 + math.sin(0.5) ** 2, -1.0 + math.sin(-1.0) ** 2],
                              [0.5 + math.sin(1.0) ** 2 / 2, 3.0 + math.sin(6.0) ** 2 / 2]]])
    assert torch.allclose(snake(x), expected, atol=1e-6)


def _stft_same(wav: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Frame t = windowed FFT of samples [t*hop - pad, t*hop - pad + n_fft), zeros outside."""
    pad = (n_fft - hop) // 2
    frames = torch.nn.functional.pad(wav, (pad, pad + n_fft)).unfold(-1, n_fft, hop)[:, : wav.shape[-1] // hop]
    return torch.fft.rfft(frames * window, dim=-1).transpose(1, 2)


@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (160, 40), (64, 40)])
def test_istft_same_inverts_a_same_padded_stft_exactly(n_fft, hop):
    torch.manual_seed(0)
    wav = torch.randn(2, 12 * hop, dtype=torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = _stft_same(wav, n_fft, hop, window)
    assert spec.shape == (2, n_fft // 2 + 1, 12)
    out = istft_same(spec, n_fft, hop, window)
    assert out.shape == (2, 1, 12 * hop)
    assert torch.allclose(out[:, 0], wav, atol=1e-9)


def test_istft_head_outputs_hop_samples_per_frame_and_rejects_odd_padding():
    head = ISTFTHead(8, 1280, 320)
    assert head(torch.randn(3, 8, 7)).shape == (3, 1, 7 * 320)
    with pytest.raises(ValueError, match="n_fft"):
        ISTFTHead(8, 321, 320)


@pytest.mark.parametrize("model", [{"decoder_activation": "snake"}, {"decoder_head": "istft"},
                                   {"decoder_head": "istft", "istft_hop": 40, "decoder_activation": "snake"}])
def test_codec_with_periodic_decoder_round_trips_shapes_and_export(tmp_path, model):
    cfg = training_config("tiny", {"model": model})
    codec = DMCodec(cfg.model).eval()
    x = torch.randn(1, 1, 16000) * 0.1
    with torch.inference_mode():
        out = codec(x)
        codes = codec.encode(x)
        wav = codec.decode(codes)
    assert out.wav.shape == x.shape and wav.shape == (1, 1, 50 * 320)
    loaded = DMCodec.from_pretrained(codec.save_pretrained(tmp_path / "m"))
    with torch.inference_mode():
        assert torch.allclose(loaded.decode(codes), wav, atol=1e-5)


def test_bad_periodic_options_name_the_key_and_the_choices():
    with pytest.raises(DmttsError, match=r"istft_hop 100 must be one of \[320, 40, 8, 2\]"):
        training_config("tiny", {"model": {"decoder_head": "istft", "istft_hop": 100}})
    with pytest.raises(DmttsError, match="decoder_activation"):
        training_config("tiny", {"model": {"decoder_activation": "relu"}})
    with pytest.raises(DmttsError, match="stft_ffts"):
        training_config("tiny", {"loss": {"lambda_stft": 1.0}})
    with pytest.raises(DmttsError, match="lr_min_ratio"):
        training_config("tiny", {"train": {"lr_min_ratio": 1.5}})


def test_stft_loss_is_zero_for_equal_signals_and_hand_computed_for_half_amplitude():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8000)
    loss = MultiResolutionSTFTLoss([256, 512])
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # |S(x/2)| = |S(x)| / 2: spectral convergence 0.5, log-magnitude L1 log 2
    assert loss(x, 0.5 * x).item() == pytest.approx(0.5 + math.log(2), abs=1e-3)


def test_cosine_schedule_ends_at_the_floor():
    from dmtts.codec.train import CodecTrainer

    cfg = training_config("tiny", {"train": {"scheduler": "cosine", "max_steps": 10, "lr": 1e-3,
                                             "lr_min_ratio": 0.2}})
    trainer = CodecTrainer(cfg, "unused", progress=False)
    for _ in range(10):
        trainer.opt_g.step()
        trainer.sched_g.step()
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4)


def test_run_record_flags_a_capped_run_only_when_short_of_max_steps():
    cfg = training_config("tiny", {"train": {"max_steps": 100, "max_minutes": 1.0}}).train
    assert run_record(40, 1, 60.0, cfg, capped=True)["capped"] is True
    assert run_record(100, 3, 60.0, cfg, capped=True)["capped"] is False
    assert run_record(100, 3, 50.0, cfg, capped=False) == {"steps": 100, "max_steps": 100, "epochs": 3,
                                                           "minutes": 0.83, "max_minutes": 1.0, "capped": False}


def test_cap_forecast_says_where_the_cap_cuts_the_cosine_schedule_and_what_fits():
    def cfg(**train):
        return training_config("tiny", {"train": {"scheduler": "cosine", "max_steps": 12000, "max_minutes": 60.0,
                                                  "lr_min_ratio": 0.2, **train}}).train

    # 200 steps in 77 s (0.385 s a step): 3,523 s left -> 9,150 more steps -> stop at 9,350
    f = cap_forecast(200, 77.0, 200, cfg())
    assert f.seconds_per_step == pytest.approx(0.385)
    assert f.stop_step == 9350 and f.max_steps == 12000
    assert f.lr_fraction == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 9350 / 12000)))
    assert 0.29 < f.lr_fraction < 0.30
    assert f.fitting_max_steps == 9000  # 0.97 * 3600 / 0.385 = 9,070, rounded down to a hundred
    msg = f.message(60.0)
    assert msg == ("train.max_minutes=60 will stop this run near step 9,350 of its 12,000 (0.385 s a step so far), "
                   "with the cosine learning rate at 29 % of its peak there; a train.max_steps of about 9,000 would "
                   "end the schedule inside the cap")
    # a resumed invocation: the cap counts from its own start, after the steps already trained
    resumed = cap_forecast(200, 77.0, 2200, cfg(max_steps=20000))
    assert resumed.stop_step == 11350 and resumed.fitting_max_steps == 11000
    # nothing to say: the schedule fits, no cap, or no cosine schedule
    assert cap_forecast(200, 77.0, 200, cfg(max_steps=9000)) is None
    assert cap_forecast(200, 77.0, 200, cfg(max_minutes=0.0)) is None
    assert cap_forecast(200, 77.0, 200, cfg(scheduler="exponential")) is None
    assert cosine_lr_fraction(0, 100, 0.2) == pytest.approx(1.0)
    assert cosine_lr_fraction(50, 100, 0.2) == pytest.approx(0.6)
    assert cosine_lr_fraction(150, 100, 0.2) == pytest.approx(0.2)


def test_a_few_steps_of_the_istft_snake_decoder_with_the_stft_loss_lower_it(tmp_path):
    from dmtts.codec.train import CodecTrainer

    torch.manual_seed(0)
    cfg = training_config("tiny", {"model": {"decoder_head": "istft", "decoder_activation": "snake"},
                                   "loss": {"stft_ffts": [256, 512], "lambda_stft": 10.0},
                                   "train": {"lr": 2e-3}})
    trainer = CodecTrainer(cfg, tmp_path / "exp", progress=False)
    t = torch.arange(5120) / 16000
    audio = torch.stack([0.3 * torch.sin(2 * math.pi * f * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))
                         for f in (140.0, 210.0)])[:, None]
    batch = {"audio": audio, "lm_feats": None, "sm_feats": None}
    losses = [trainer.train_step(batch)["stft"] for _ in range(15)]
    assert min(losses[-5:]) < 0.85 * losses[0], losses
