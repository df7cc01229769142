"""TTS training: losses fall on tiny data, exact resume, config handling, export."""

import json

import pytest
import torch

from tts_fixtures import make_tts_data, write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tts_data(tmp_path_factory.mktemp("ttsdata"))


def _history(exp_dir):
    from dmtts.train.checkpoint import latest_checkpoint

    return torch.load(latest_checkpoint(exp_dir), weights_only=False)["train_state"]["history"]["train"]


@pytest.mark.parametrize("kind", ["ar", "nar"])
def test_loss_falls(tmp_path, data, kind):
    from dmtts.tts.train import train

    cfg = write_config(tmp_path / "c.yaml", data, **{"training.max_steps": 30})
    out = train(kind, str(cfg), str(tmp_path / "exp"), progress=False)
    hist = _history(tmp_path / "exp")
    first, last = hist[0][1], hist[-1][1]
    # the final validation is in the last checkpoint too, so a --resume keeps it
    from dmtts.train.checkpoint import latest_checkpoint

    saved = torch.load(latest_checkpoint(tmp_path / "exp"), weights_only=False)["train_state"]["history"]
    assert saved["valid"] and saved["valid"][-1][0] == 30
    assert last < 0.6 * first, hist
    # run artefacts: resolved config, loss curve, tensorboard, export loadable by synthesize
    assert (tmp_path / "exp" / "config.yaml").is_file()
    assert (tmp_path / "exp" / "loss.png").stat().st_size > 1000
    curve = (tmp_path / "exp" / "curve.csv").read_text().splitlines()
    assert curve[0] == "step,minutes,train_loss,train_acc,valid_loss,valid_acc,gap_reversed,gap_shuffled,diag_best"
    rows = [ln.split(",") for ln in curve[1:]]
    probe_cells = [c for r in rows if r[4] for c in r[6:9]]  # the alignment probe: with validation, AR only
    assert probe_cells and (all(probe_cells) if kind == "ar" else not any(probe_cells))
    assert [int(r[0]) for r in rows] == [st for st, _ in hist]
    accs = [float(r[3]) for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accs) and accs[-1] > accs[0]  # accuracy rises as the loss falls
    assert all(float(r[1]) > 0 for r in rows)
    assert any((tmp_path / "exp" / "tensorboard").iterdir())
    conf = json.loads((out / "config.json").read_text())
    assert conf["kind"] == kind and conf["model"]["d_model"] == 32
    # steps trained against steps configured, in the export and in train_summary.json
    assert conf["training"]["steps"] == conf["training"]["max_steps"] == 30 and not conf["training"]["capped"]
    assert json.loads((tmp_path / "exp" / "train_summary.json").read_text()) == conf["training"]
    from dmtts.tts.export import load_exported

    model, text, _ = load_exported(out, kind)
    assert not model.training and text.vocab_size == conf["model"]["text_vocab_size"]


def test_resume_is_exact(tmp_path, data):
    """8 steps straight == 4 steps, stop, --resume, 4 more (mid-epoch, dropout on, accumulation)."""
    from dmtts.train.checkpoint import latest_checkpoint
    from dmtts.tts.train import train

    common = {"training.accum_grad": 2, "data.max_duration": 1.2}
    straight = write_config(tmp_path / "a.yaml", data, **{"training.max_steps": 8}, **common)
    train("nar", str(straight), str(tmp_path / "a"), progress=False)
    half = write_config(tmp_path / "b.yaml", data, **{"training.max_steps": 4}, **common)
    train("nar", str(half), str(tmp_path / "b"), progress=False)
    state = torch.load(latest_checkpoint(tmp_path / "b"), weights_only=False)["train_state"]
    assert state["epoch"] == 0 and state["batches_in_epoch"] == 8  # stopped mid-epoch
    write_config(tmp_path / "b.yaml", data, **{"training.max_steps": 8}, **common)
    train("nar", str(half), str(tmp_path / "b"), resume=True, progress=False)
    a = torch.load(latest_checkpoint(tmp_path / "a"), weights_only=False)
    b = torch.load(latest_checkpoint(tmp_path / "b"), weights_only=False)
    assert a["step"] == b["step"] == 8
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["train_state"]["history"]["train"] == b["train_state"]["history"]["train"]


def test_refuses_to_overwrite_and_rejects_bad_config(tmp_path, data):
    from dmtts.errors import DmttsError
    from dmtts.tts.train import train

    cfg = write_config(tmp_path / "c.yaml", data, **{"training.max_steps": 1, "training.dtype": "bfloat16"})
    train("ar", str(cfg), str(tmp_path / "exp"), progress=False)  # bf16 autocast runs
    with pytest.raises(DmttsError, match="--resume"):
        train("ar", str(cfg), str(tmp_path / "exp"), progress=False)
    bad = write_config(tmp_path / "bad.yaml", data, **{"data.max_durration": 3})
    with pytest.raises(DmttsError, match="max_durration"):
        train("ar", str(bad), str(tmp_path / "exp2"), progress=False)


def test_a_wall_clock_cap_is_flagged(tmp_path, data, caplog):
    """A run stopped by training.max_minutes says so: warning, train_summary.json, export config."""
    from dmtts.tts.train import train

    cfg = write_config(tmp_path / "c.yaml", data, **{"training.max_steps": 1000, "training.max_minutes": 1e-6})
    with caplog.at_level("WARNING"):
        out = train("ar", str(cfg), str(tmp_path / "exp"), progress=False)
    summary = json.loads((out / "config.json").read_text())["training"]
    assert summary["capped"] and summary["steps"] < 1000 and summary["max_steps"] == 1000
    assert "stopped the AR after" in caplog.text


def test_export_best_picks_the_kept_checkpoint_with_the_lowest_validation_loss(tmp_path, data):
    """`dmtts tts export --checkpoint best`: the lowest validation loss among the checkpoints still
    on disk, with that checkpoint's weights (not the newest's)."""
    from safetensors.torch import load_file

    from dmtts.errors import DmttsError
    from dmtts.train.checkpoint import latest_checkpoint, list_checkpoints
    from dmtts.tts.export import WEIGHTS_FILE, best_checkpoint, export_checkpoint
    from dmtts.tts.train import train

    cfg = write_config(tmp_path / "c.yaml", data, **{"training.max_steps": 12, "training.valid_interval": 4,
                                                      "training.save_interval": 4, "training.keep_last": 3})
    exp = tmp_path / "exp"
    train("nar", str(cfg), str(exp), progress=False)
    kept = [int(p.stem.split("-")[1]) for p in list_checkpoints(exp)]
    assert len(kept) == 3 and kept[-1] == 12
    # a hand-made validation history: the lowest loss belongs to a step whose checkpoint is gone,
    # the second lowest to the oldest kept one
    latest = latest_checkpoint(exp)
    payload = torch.load(latest, weights_only=False)
    losses = {s: 5.0 for s in kept}
    losses[kept[0]] = 2.0
    payload["train_state"]["history"]["valid"] = [(1, 0.5)] + sorted(losses.items())
    torch.save(payload, latest)
    best = best_checkpoint(exp)
    assert best.name == f"step-{kept[0]:08d}.pt"
    out = export_checkpoint(exp, tmp_path / "best", "best")
    weights = load_file(str(out / WEIGHTS_FILE))
    state = torch.load(best, weights_only=False)["model"]
    assert all(torch.equal(weights[k], state[k]) for k in weights)
    newest = torch.load(latest, weights_only=False)["model"]
    assert any(not torch.equal(weights[k], newest[k]) for k in weights)
    # no kept checkpoint was validated: a clear error
    payload["train_state"]["history"]["valid"] = [(1, 0.5)]
    torch.save(payload, latest)
    with pytest.raises(DmttsError, match="no kept checkpoint has a validation loss"):
        best_checkpoint(exp)


def test_init_from_starts_at_the_given_weights(tmp_path, data):
    """training.init_from: an export (float16 too) or a checkpoint file gives the step-0 weights;
    another kind or model config is a clear error; --resume ignores it."""
    from dmtts.errors import DmttsError
    from dmtts.train.checkpoint import list_checkpoints
    from dmtts.tts.export import export_checkpoint
    from dmtts.tts.train import train

    base = write_config(tmp_path / "a.yaml", data, **{"training.max_steps": 6})
    train("nar", str(base), str(tmp_path / "a"), progress=False)
    src = export_checkpoint(tmp_path / "a", tmp_path / "a_fp16", dtype="float16")
    src_ckpt = list_checkpoints(tmp_path / "a")[-1]
    for name, source in (("export", src), ("checkpoint", src_ckpt)):
        # base_lr 0: the one step keeps the weights, so the saved model is the start
        cfg = write_config(tmp_path / f"{name}.yaml", data, **{"training.max_steps": 1, "optim.base_lr": 0.0,
                                                                "training.init_from": str(source)})
        out = train("nar", str(cfg), str(tmp_path / name), progress=False)
        got = torch.load(list_checkpoints(tmp_path / name)[-1], weights_only=False)["model"]
        want = torch.load(src_ckpt, weights_only=False)["model"]
        tol = 1e-3 if name == "export" else 0.0  # float16 storage
        assert all(torch.allclose(got[k].float(), want[k].float(), atol=tol, rtol=tol) for k in want), name
        assert json.loads((out / "config.json").read_text())["training"]["init_from"] == str(source)
    wrong_kind = write_config(tmp_path / "k.yaml", data, **{"training.max_steps": 1, "training.init_from": str(src)})
    with pytest.raises(DmttsError, match="holds a NAR model, not AR"):
        train("ar", str(wrong_kind), str(tmp_path / "k"), progress=False)
    wrong_size = write_config(tmp_path / "s.yaml", data, **{"training.max_steps": 1, "training.init_from": str(src),
                                                            "model.ffn_dim": 48})
    with pytest.raises(DmttsError, match="ffn_dim"):
        train("nar", str(wrong_size), str(tmp_path / "s"), progress=False)
    missing = write_config(tmp_path / "m.yaml", data, **{"training.max_steps": 1, "training.init_from": str(tmp_path / "nope")})
    with pytest.raises(DmttsError, match="does not exist"):
        train("nar", str(missing), str(tmp_path / "m"), progress=False)
