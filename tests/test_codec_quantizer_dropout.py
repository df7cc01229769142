"""Quantizer dropout (``train.quantizer_dropout``): the decoder gets the first n levels while the
RVQ, its losses and its codebook updates see all of them; the draw depends on seed and step only."""

import copy

import pytest
import torch

from codec_helpers import micro_config
from dmtts.codec.config import training_config
from dmtts.codec.model import DMCodec
from dmtts.codec.rvq import ResidualVectorQuantizer
from dmtts.codec.train import CodecTrainer
from dmtts.errors import DmttsError


def _trained_rvq() -> ResidualVectorQuantizer:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, n_q=3, codebook_size=8, kmeans_iters=5, threshold_ema_dead_code=0)
    rvq.train()
    rvq(torch.randn(2, 4, 50))  # k-means init of every level
    return rvq


def test_rvq_decoder_levels_sum_only_the_first_levels_and_update_every_codebook():
    x = torch.randn(2, 4, 20, requires_grad=True)
    rvq = _trained_rvq()
    full_rvq, part_rvq = copy.deepcopy(rvq), copy.deepcopy(rvq)
    full = full_rvq(x)
    part = part_rvq(x, decoder_levels=2)
    assert torch.equal(part.codes, full.codes) and torch.equal(part.commit_loss, full.commit_loss)
    assert all(torch.equal(a, b) for a, b in zip(part.levels, full.levels))
    # the decoder input is the sum of the first two codebook vectors of each frame
    expected = sum(rvq.layers[k].dequantize(full.codes[:, k].reshape(-1)) for k in range(2))
    assert torch.allclose(part.quantized.transpose(1, 2).reshape(-1, 4), expected, atol=1e-6)
    assert not torch.allclose(part.quantized, full.quantized)
    # codebooks of all three levels moved the same way in both (EMA on every level)
    for a, b, before in zip(full_rvq.layers, part_rvq.layers, rvq.layers):
        assert torch.equal(a.embed, b.embed) and not torch.equal(a.embed, before.embed)
    # straight-through: the gradient still reaches the latents
    part.quantized.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))
    with pytest.raises(DmttsError, match="decoder_levels=4"):
        part_rvq(x, decoder_levels=4)


def test_codec_forward_with_decoder_levels_decodes_those_levels():
    torch.manual_seed(0)
    codec = DMCodec(micro_config().model)
    codec.train()
    codec(torch.randn(2, 1, 3200) * 0.1)  # initialise the codebooks
    codec.eval()
    wav = torch.randn(1, 1, 3200) * 0.1
    with torch.no_grad():
        out = codec(wav, decoder_levels=1)
        reference = codec.decode(out.codes[:, :1])
    assert out.codes.shape[1] == codec.n_q and len(out.levels) == codec.n_q
    assert torch.allclose(out.wav, reference[..., : out.wav.shape[-1]], atol=1e-4)


def test_trainer_draws_decoder_levels_from_seed_and_step():
    cfg = micro_config(train={"quantizer_dropout": 0.5})
    n_q = cfg.model.n_q
    a, b = CodecTrainer(cfg, "unused", progress=False), CodecTrainer(cfg, "unused", progress=False)
    draws = [a.decoder_levels(step) for step in range(400)]
    assert draws == [b.decoder_levels(step) for step in range(400)]  # every rank, every resume
    dropped = [d for d in draws if d is not None]
    assert 150 < len(dropped) < 250  # about half the steps
    assert set(dropped) == set(range(1, n_q))  # 1..n_q-1, never all levels
    off = CodecTrainer(micro_config(), "unused", progress=False)
    assert all(off.decoder_levels(step) is None for step in range(50))
    other_seed = CodecTrainer(micro_config(train={"quantizer_dropout": 0.5, "seed": 7}), "unused", progress=False)
    assert [other_seed.decoder_levels(s) for s in range(400)] != draws


def test_training_steps_with_quantizer_dropout_report_their_levels_and_lower_the_loss(tmp_path):
    import numpy as np
    import soundfile as sf

    from codec_helpers import make_wavs

    torch.manual_seed(0)
    trainer = CodecTrainer(micro_config(train={"lr": 2e-3, "quantizer_dropout": 1.0}), tmp_path / "exp")
    wavs = [sf.read(p)[0] for p in make_wavs(tmp_path / "w", 2, 0.32)]
    batch = {"audio": torch.tensor(np.stack(wavs), dtype=torch.float32)[:, None], "lm_feats": None, "sm_feats": None}
    stats = []
    for step in range(12):
        trainer.step = step
        stats.append(trainer.train_step(batch))
    assert [s["decoder_levels"] for s in stats] == [float(trainer.decoder_levels(k)) for k in range(12)]
    assert all(1 <= s["decoder_levels"] < trainer.cfg.model.n_q for s in stats)
    mels = [s["mel"] for s in stats]
    assert np.mean(mels[-3:]) < 0.8 * np.mean(mels[:3]), mels


@pytest.mark.parametrize("over, message", [
    ({"train": {"quantizer_dropout": 1.5}}, "train.quantizer_dropout must be a probability"),
    ({"train": {"quantizer_dropout": 0.5}, "model": {"n_q": 1}}, "needs model.n_q >= 2"),
])
def test_bad_quantizer_dropout_is_refused(over, message):
    with pytest.raises(DmttsError, match=message):
        training_config("tiny", over)
