"""Alignment aids of the AR (dmtts/tts/align.py): prior against scipy, losses against hand
computations, the explicit attention path against SDPA, training with the aids, config errors."""

import pytest
import torch

from tts_fixtures import make_tts_data, write_config


def test_beta_binomial_prior_matches_scipy():
    from scipy.stats import betabinom

    from dmtts.tts.align import beta_binomial_log_prior

    logp = beta_binomial_log_prior(torch.tensor([5, 3]), torch.tensor([7, 4]), L=5, A=7, omega=0.5)
    for b, (N, T) in enumerate([(5, 7), (3, 4)]):
        for t in range(1, T + 1):
            ref = torch.tensor([betabinom.logpmf(j, N - 1, 0.5 * t, 0.5 * (T + 1 - t)) for j in range(N)])
            assert torch.allclose(logp[b, t - 1, :N], ref.float(), atol=1e-5)
            assert torch.allclose(logp[b, t - 1, :N].exp().sum(), torch.tensor(1.0), atol=1e-5)
        assert (logp[b, T:] == 0).all() and (logp[b, :, N:] == 0).all()  # outside the sample: untouched
    # the prior's mode walks down the text as audio advances: monotonic
    modes = logp[0, :7, :5].argmax(-1)
    assert (modes[1:] >= modes[:-1]).all() and modes[0] == 0 and modes[-1] == 4


def test_prior_weight_schedule():
    from dmtts.tts.align import prior_weight

    assert [prior_weight(s, 10, 20) for s in (0, 10, 15, 20, 30)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert prior_weight(5, 5, 5) == 1.0 and prior_weight(6, 5, 5) == 0.0


def _tiny_ar(n_layers=2, n_heads=2):
    from dmtts.tts.config import TTSModelConfig
    from dmtts.tts.model import ARModel

    torch.manual_seed(0)
    cfg = TTSModelConfig(n_layers=n_layers, n_heads=n_heads, d_model=32, ffn_dim=64, dropout=0.0,
                         codebook_size=16, n_q=8, text_vocab_size=12)
    return ARModel(cfg).eval()


def _batch():
    text = torch.tensor([[1, 4, 5, 6, 7, 2], [1, 8, 9, 2, 0, 0]])
    text_lens = torch.tensor([6, 4])
    codes = torch.randint(0, 16, (2, 9), generator=torch.Generator().manual_seed(3))
    code_lens = torch.tensor([9, 6])
    return text, text_lens, codes, code_lens


def test_explicit_attention_equals_sdpa_and_zero_prior_changes_nothing():
    from dmtts.tts.align import prior_attention_bias

    model = _tiny_ar()
    text, text_lens, codes, code_lens = _batch()
    plain, _ = model(text, text_lens, codes, code_lens)
    recorded, stats = model(text, text_lens, codes, code_lens, attn_layers=[0, 1])
    assert torch.allclose(plain, recorded, atol=1e-6)
    rec = stats["attn"][1]
    assert rec.probs.shape == (2, 2, 6 + 10, 6 + 10)
    assert torch.allclose(rec.probs[1, :, 6:6 + 7].sum(-1), torch.ones(2, 7), atol=1e-5)  # valid rows sum to 1
    assert (rec.probs[1, :, :, 4:6] == 0).all()  # padded text keys get nothing
    zero = prior_attention_bias(text_lens, code_lens + 1, 6, 10, 2, [0], [0], weight=0.0)
    with_zero, _ = model(text, text_lens, codes, code_lens, attn_bias=zero)
    assert torch.allclose(plain, with_zero, atol=1e-6)
    full = prior_attention_bias(text_lens, code_lens + 1, 6, 10, 2, [0], [0], weight=1.0)
    assert (full[0][:, 1] == 0).all() and (full[0][:, 0, :6] == 0).all()  # other heads, text queries: no bias
    with_prior, _ = model(text, text_lens, codes, code_lens, attn_bias=full)
    assert not torch.allclose(plain, with_prior)


def _records_from(probs_text_block, L):
    """Records whose audio x text block is ``probs_text_block [B, H, A, L]`` (log as scores)."""
    from dmtts.tts.transformer import AttentionRecord

    B, H, A, _ = probs_text_block.shape
    probs = torch.zeros(B, H, L + A, L + A)
    probs[:, :, L:, :L] = probs_text_block
    return {0: AttentionRecord(probs.clamp(min=1e-9).log(), probs)}


def test_ctc_and_guided_losses_prefer_the_diagonal():
    from dmtts.tts.align import ctc_alignment_loss, guided_attention_loss

    L, A = 4, 8
    diag = torch.zeros(1, 1, A, L)
    for t in range(A):
        diag[0, 0, t, t * L // A] = 1.0
    anti = diag.flip(-1)
    lens = dict(text_lens=torch.tensor([L]), audio_lens=torch.tensor([A]), L=L)
    ctc_diag = ctc_alignment_loss(_records_from(diag, L), [0], [0], **lens)
    ctc_anti = ctc_alignment_loss(_records_from(anti, L), [0], [0], **lens)
    assert ctc_diag < 1.0 < ctc_anti  # one monotonic path has (nearly) all the mass vs none
    g_diag = guided_attention_loss(_records_from(diag, L), [0], [0], **lens)
    g_anti = guided_attention_loss(_records_from(anti, L), [0], [0], **lens)
    # hand computation for the diagonal: frame t attends j = t//2, cost 1 - exp(-(j/4 - t/8)^2 / 0.32)
    expected = sum(1 - torch.exp(torch.tensor(-((t // 2) / 4 - t / 8) ** 2 / 0.32)) for t in range(A)) / (A * L)
    assert torch.isclose(g_diag, expected, atol=1e-6) and g_anti > 5 * g_diag


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tts_data(tmp_path_factory.mktemp("aligndata"))


def test_training_with_aids_logs_them_and_learns(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dmtts.train.checkpoint import latest_checkpoint
    from dmtts.tts.train import train

    cfg = write_config(tmp_path / "c.yaml", data, **{
        "training.max_steps": 30, "align.layers": [0], "align.heads": [0], "align.prior": True,
        "align.prior_start_step": 10, "align.prior_end_step": 20, "align.ctc_scale": 0.01,
        "align.guided_scale": 0.1})
    train("ar", str(cfg), str(tmp_path / "exp"), progress=False)
    hist = torch.load(latest_checkpoint(tmp_path / "exp"), weights_only=False)["train_state"]["history"]["train"]
    assert hist[-1][1] < 0.7 * hist[0][1]
    events = EventAccumulator(str(tmp_path / "exp" / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert {"train/align_prior_w", "train/align_ctc", "train/align_guided"} <= set(tags)
    w = [e.value for e in events.Scalars("train/align_prior_w")]
    assert w[0] == 1.0 and w[-1] == 0.0  # annealed away by the end


def test_aids_are_off_by_default_and_bad_heads_are_clear_errors(tmp_path, data):
    from dmtts.errors import DmttsError
    from dmtts.tts.config import TTSTrainConfig
    from dmtts.tts.train import train

    assert not TTSTrainConfig().align.enabled
    cfg = write_config(tmp_path / "c.yaml", data, **{"align.prior": True, "align.layers": [0], "align.heads": [5]})
    with pytest.raises(DmttsError, match=r"align\.heads: \[5\] out of range"):
        train("ar", str(cfg), str(tmp_path / "a"), progress=False)
    cfg = write_config(tmp_path / "d.yaml", data, **{"align.ctc_scale": 0.1})
    with pytest.raises(DmttsError, match=r"align\.layers / align\.heads are empty"):
        train("ar", str(cfg), str(tmp_path / "b"), progress=False)
    with pytest.raises(DmttsError, match="for the AR"):
        train("nar", str(write_config(tmp_path / "e.yaml", data, **{"align.prior": True, "align.layers": [0],
                                                                     "align.heads": [0]})),
              str(tmp_path / "c"), progress=False)
