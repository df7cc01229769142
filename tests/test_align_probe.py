"""Alignment probe of the AR: phoneme reversal, monotonic path, band score, gap, training hooks."""

import itertools
import math

import numpy as np
import pytest
import torch

from tts_fixtures import make_tts_data, write_config

BOS, EOS, PAD = 1, 2, 0


def test_reversal_and_shuffle_keep_bos_eos_and_padding():
    from dmtts.tts.align_probe import reverse_inner, shuffle_inner

    text = torch.tensor([[BOS, 5, 6, 7, 8, EOS, PAD],
                         [BOS, 9, 10, EOS, PAD, PAD, PAD],
                         [BOS, 11, EOS, PAD, PAD, PAD, PAD],
                         [BOS, 4, 5, 6, 7, 8, EOS]])
    lens = torch.tensor([6, 4, 3, 7])
    rev = reverse_inner(text, lens)
    assert rev.tolist() == [[BOS, 8, 7, 6, 5, EOS, PAD],
                            [BOS, 10, 9, EOS, PAD, PAD, PAD],
                            [BOS, 11, EOS, PAD, PAD, PAD, PAD],
                            [BOS, 8, 7, 6, 5, 4, EOS]]
    assert torch.equal(reverse_inner(rev, lens), text)
    shuf = shuffle_inner(text, lens, seed=3)
    assert torch.equal(shuf, shuffle_inner(text, lens, seed=3))  # deterministic
    for b, n in enumerate(lens.tolist()):
        assert shuf[b, 0] == BOS and shuf[b, n - 1] == EOS and (shuf[b, n:] == PAD).all()
        assert sorted(shuf[b, 1 : n - 1].tolist()) == sorted(text[b, 1 : n - 1].tolist())
    assert not torch.equal(shuf, text)


def test_path_on_diagonal_attention_is_the_diagonal():
    from dmtts.tts.align_probe import band_score, monotonic_path

    eye = np.eye(8)
    path = monotonic_path(np.log(eye + 1e-9))
    assert path.tolist() == list(range(8))
    assert band_score(eye, path, band=2) == pytest.approx(1.0)
    assert band_score(eye, path, band=0) == pytest.approx(1.0)
    # two frames per text slot, mass spread a little around it: path holds each slot twice
    stretched = np.kron(np.eye(5), np.ones((2, 1))) + 0.01
    path = monotonic_path(np.log(stretched))
    assert path.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # rows renormalised: 1 + 0.01 on the path out of 1 + 5 * 0.01 per row
    assert band_score(stretched, path, band=0) == pytest.approx(1.01 / 1.05)
    assert band_score(stretched, path, band=4) == pytest.approx(1.0)
    # fewer audio rows than text columns: the path jumps and still ends at the last column
    assert monotonic_path(np.log(np.eye(6)[[0, 2, 4, 5]] + 1e-9)).tolist() == [0, 2, 4, 5]


def test_uniform_attention_scores_low():
    from dmtts.tts.align_probe import band_score, monotonic_path

    T = N = 20  # T == N: the only monotonic path with steps 0/1 is the diagonal
    uniform = np.full((T, N), 1.0 / N)
    path = monotonic_path(np.log(uniform))
    assert path.tolist() == list(range(N))
    # +-2 window inside [0, 19]: 3, 4, then 5 for 16 rows, then 4, 3 columns, each 1/20
    expected = (3 + 4 + 5 * 16 + 4 + 3) / (T * N)
    assert expected == pytest.approx(0.235)
    assert band_score(uniform, path, band=2) == pytest.approx(expected)
    # unnormalised rows (as the audio->text block of a row that also attends to audio) give the same
    assert band_score(0.3 * uniform, path, band=2) == pytest.approx(expected)


def test_path_is_the_best_monotonic_path():
    """Against brute force over every path with steps 0/1 from (0, 0) to (T-1, N-1)."""
    from dmtts.tts.align_probe import monotonic_path

    rng = np.random.default_rng(0)
    T, N = 7, 4
    logp = np.log(rng.random((3, T, N)))
    paths = monotonic_path(logp)
    for b in range(3):
        best = -math.inf
        for steps in itertools.product((0, 1), repeat=T - 1):
            if sum(steps) != N - 1:
                continue
            cols = np.concatenate([[0], np.cumsum(steps)])
            best = max(best, logp[b, np.arange(T), cols].sum())
        p = paths[b]
        assert p[0] == 0 and p[-1] == N - 1 and set(np.diff(p)) <= {0, 1}
        assert logp[b, np.arange(T), p].sum() == pytest.approx(best)


def _tiny_ar(n_layers=2, n_heads=2):
    from dmtts.tts.config import TTSModelConfig
    from dmtts.tts.model import ARModel

    torch.manual_seed(0)
    cfg = TTSModelConfig(n_layers=n_layers, n_heads=n_heads, d_model=32, ffn_dim=64, codebook_size=16, n_q=1,
                         text_vocab_size=14)
    return ARModel(cfg)


def _batch():
    text = torch.tensor([[BOS, 4, 5, 6, 7, 8, EOS], [BOS, 9, 10, 11, EOS, PAD, PAD]])
    lens = torch.tensor([7, 5])
    codes = torch.randint(0, 16, (2, 12, 1), generator=torch.Generator().manual_seed(0))
    code_lens = torch.tensor([12, 8])
    return {"text": text, "text_lens": lens, "codes": codes, "code_lens": code_lens, "cut_ids": ["a", "b"]}


def test_per_sample_attention_matches_the_padded_batch():
    from dmtts.tts.align_probe import audio_text_attention

    model = _tiny_ar().eval()
    b = _batch()
    codes = b["codes"][..., 0]
    per_sample = audio_text_attention(model, b["text"], b["text_lens"], codes, b["code_lens"], max_bytes=1)
    _, stats = model(b["text"], b["text_lens"], codes, b["code_lens"], attn_layers=[0, 1])
    L = b["text"].shape[1]
    for i, (n, t) in enumerate(zip(b["text_lens"].tolist(), b["code_lens"].tolist())):
        assert per_sample[i].shape == (2, 2, t + 1, n)
        for layer in (0, 1):
            full = stats["attn"][layer].probs[i, :, L : L + t + 1, :n]
            assert np.allclose(per_sample[i][layer], full.detach().numpy(), atol=1e-5)


def test_untrained_model_gap_is_finite_and_mode_restored(tmp_path):
    from dmtts.tts.align_probe import AlignmentProbe

    model = _tiny_ar()
    model.train()
    probe = AlignmentProbe(_batch(), band=2, seed=0)
    res = probe.measure(model, tmp_path / "fig" / "attn.png")
    assert model.training
    assert math.isfinite(res.loss) and math.isfinite(res.gap_reversed) and math.isfinite(res.gap_shuffled)
    assert res.diag.shape == (2, 2) and ((res.diag >= 0) & (res.diag <= 1)).all()
    assert res.diag_best == res.diag.max() and res.diag[res.best_head] == res.diag_best
    scalars = res.scalars()
    assert {"gap_reversed", "gap_shuffled", "diag_best", "diag_L0_H0", "diag_L1_H1"} <= set(scalars)
    assert res.png.startswith(b"\x89PNG") and (tmp_path / "fig" / "attn.png").read_bytes() == res.png
    assert res.image.dtype == np.uint8 and res.image.ndim == 3 and res.image.shape[2] == 3
    # deterministic: the same model gives the same numbers
    again = probe.measure(model, figure=False)
    assert again.gap_reversed == pytest.approx(res.gap_reversed) and np.allclose(again.diag, res.diag)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tts_data(tmp_path_factory.mktemp("probedata"), n_cuts=12)


def test_ar_training_logs_the_probe(tmp_path, data):
    from dmtts.train.tblog import read_scalars
    from dmtts.tts.train import train

    torch.set_num_threads(1)
    every3 = {"training.valid_interval": 3, "training.save_interval": 3, "training.num_threads": 1}
    cfg = write_config(tmp_path / "c.yaml", data, **{"training.max_steps": 6}, **every3)
    train("ar", str(cfg), str(tmp_path / "exp"), progress=False)
    exp = tmp_path / "exp"
    lines = (exp / "curve.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[-3:] == ["gap_reversed", "gap_shuffled", "diag_best"]
    rows = {int(r.split(",")[0]): dict(zip(header, r.split(","))) for r in lines[1:]}
    for step in (3, 6):  # validation steps: every probe cell filled
        assert all(rows[step][k] != "" for k in ("valid_loss", "gap_reversed", "gap_shuffled", "diag_best"))
        assert 0.0 <= float(rows[step]["diag_best"]) <= 1.0
    assert rows[1]["gap_reversed"] == ""  # a log step without validation
    tags = read_scalars(exp / "tensorboard", prefix="align/")
    assert {"align/gap_reversed", "align/gap_shuffled", "align/diag_best", "align/diag_L0_H0",
            "align/diag_L1_H1"} <= set(tags)
    assert [s for s, _ in tags["align/gap_reversed"]] == [3, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((exp / "tensorboard").glob("events.out.tfevents.*"))), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("align/attention")] == [3, 6]
    assert sorted(p.name for p in (exp / "align").glob("*.png")) == ["attention_00000003.png", "attention_00000006.png"]
    from dmtts.train.checkpoint import latest_checkpoint

    hist = torch.load(latest_checkpoint(exp), weights_only=False)["train_state"]["history"]
    assert [s for s, _ in hist["diag_best"]] == [3, 6] and np.asarray(hist["diag_heads"][0][1]).shape == (2, 2)
    # resume keeps the measured points and adds new ones
    write_config(tmp_path / "c.yaml", data, **{"training.max_steps": 9}, **every3)
    train("ar", str(cfg), str(exp), resume=True, progress=False)
    hist = torch.load(latest_checkpoint(exp), weights_only=False)["train_state"]["history"]
    assert [s for s, _ in hist["gap_reversed"]] == [3, 6, 9]
    lines = (exp / "curve.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in lines[1:] if r.split(",")[-1]] == ["3", "6", "9"]
