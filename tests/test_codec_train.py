"""Codec training: loss falls, exact resume, export, teacher features from cuts."""

import numpy as np
import pytest
import torch
import yaml

from codec_helpers import make_cuts, micro_config
from dmtts.codec.model import DMCodec
from dmtts.codec.export import export_checkpoint, validate_averages
from dmtts.codec.train import CodecTrainer
from dmtts.errors import DmttsError


def test_a_few_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    cfg = micro_config(train={"lr": 2e-3})
    trainer = CodecTrainer(cfg, tmp_path / "exp")
    from codec_helpers import make_wavs
    import soundfile as sf

    wavs = [sf.read(p)[0] for p in make_wavs(tmp_path / "w", 2, 0.32)]
    batch = {"audio": torch.tensor(np.stack(wavs), dtype=torch.float32)[:, None], "lm_feats": None, "sm_feats": None}
    mels = [trainer.train_step(batch)["mel"] for _ in range(12)]
    assert np.mean(mels[-3:]) < 0.8 * np.mean(mels[:3]), mels


def test_late_discriminators_follow_the_generator_schedule_without_a_torch_warning(tmp_path):
    import warnings

    cfg = micro_config(train={"scheduler": "cosine", "max_steps": 10, "adversarial_start_step": 100})
    trainer = CodecTrainer(cfg, tmp_path / "exp")
    batch = {"audio": 0.1 * torch.randn(2, 1, 3200), "lm_feats": None, "sm_feats": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            trainer.train_step(batch)
    assert not [w for w in caught if "lr_scheduler" in str(w.message)], [str(w.message) for w in caught]
    lr_g, lr_d = trainer.opt_g.param_groups[0]["lr"], trainer.opt_d.param_groups[0]["lr"]
    assert lr_g == lr_d < cfg.train.lr  # three cosine steps taken by both


def _run(cfg, exp, resume=False):
    return CodecTrainer(cfg, exp, resume=resume).run()


def test_resume_continues_bit_identically_and_export(tmp_path):
    train = make_cuts(tmp_path, n=4, seconds=0.5, lm_dim=6, sm_dim=5)
    over = dict(data={"train_cuts": str(train), "valid_cuts": str(train), "max_valid_batches": 1},
                distill={"mode": "lm+sm", "lm_dim": 6, "sm_dim": 5},
                train={"checkpoint_every": 2, "valid_every": 3, "max_steps": 5, "tb_audio_every": 3})
    cfg = micro_config(**over)
    full = _run(cfg, tmp_path / "a")  # 2 batches per epoch: crosses an epoch boundary
    assert full["steps"] == 5 and full["epochs"] == 2
    cfg_half = micro_config(**{**over, "train": {**over["train"], "max_steps": 3}})
    _run(cfg_half, tmp_path / "b")
    with pytest.raises(DmttsError, match="--resume"):
        _run(cfg, tmp_path / "b")
    resumed = _run(cfg, tmp_path / "b", resume=True)
    assert resumed["steps"] == 5
    a = torch.load(tmp_path / "a/checkpoints/step-00000005.pt", weights_only=False)
    b = torch.load(tmp_path / "b/checkpoints/step-00000005.pt", weights_only=False)
    for part in ("generator", "distiller", "discriminator"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    def losses(history):  # wall-clock time differs between runs; everything else is identical
        return [{k: v for k, v in row.items() if k != "elapsed"} for row in history]

    assert losses(a["history"]) == losses(b["history"])
    assert all(r["elapsed"] > 0 for r in b["history"])
    assert [r["step"] for r in b["history"]] == [1, 2, 3, 4, 5]
    assert (tmp_path / "a/config.yaml").is_file() and (tmp_path / "a/loss_curve.png").is_file()
    assert yaml.safe_load((tmp_path / "a/config.yaml").read_text())["distill"]["mode"] == "lm+sm"
    assert any((tmp_path / "a/tensorboard").iterdir())
    # export folds weight norm; from_pretrained gives the same codes as the trained model
    out = export_checkpoint(tmp_path / "a", tmp_path / "model")
    import json

    record = json.loads((out / "config.json").read_text())["training"]
    assert record["steps"] == 5 and record["max_steps"] == 5 and record["capped"] is False
    loaded = DMCodec.from_pretrained(out)
    trained = DMCodec(cfg.model)
    trained.load_state_dict(a["generator"])
    trained.eval()
    x = torch.randn(1, 1, 8000) * 0.1
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x), trained.encode(x))


def test_a_cap_that_will_cut_the_cosine_schedule_is_forecast_early_and_recorded(tmp_path, monkeypatch, caplog):
    import json

    import dmtts.codec.train as codec_train

    monkeypatch.setattr(codec_train, "CAP_FORECAST_AFTER_STEPS", 2)
    train = make_cuts(tmp_path, n=4, seconds=0.5)
    cfg = micro_config(data={"train_cuts": str(train)},
                       train={"scheduler": "cosine", "max_steps": 100000, "max_minutes": 0.03,
                              "checkpoint_every": 0, "valid_every": 0, "tb_audio_every": 0})
    with caplog.at_level("WARNING", logger="dmtts.codec.train"):
        summary = _run(cfg, tmp_path / "exp")
    assert summary["capped"] and summary["steps"] < 100000
    forecast = summary["cap_forecast"]
    assert "of its 100,000" in forecast and "a train.max_steps of about" in forecast
    assert forecast in caplog.text
    assert json.loads((tmp_path / "exp/train_summary.json").read_text())["cap_forecast"] == forecast
    # a schedule that ends inside the cap gets no forecast
    fits = micro_config(data={"train_cuts": str(train)},
                        train={"scheduler": "cosine", "max_steps": 4, "max_minutes": 10.0, "checkpoint_every": 0,
                               "valid_every": 0, "tb_audio_every": 0})
    assert "cap_forecast" not in _run(fits, tmp_path / "fits")


def test_resume_accepts_a_checkpoint_from_before_a_new_default_key_and_refuses_another_model(tmp_path):
    """A model key added since a checkpoint was saved (its default: the model the checkpoint has)
    does not block --resume; a different value of a key does."""
    train = make_cuts(tmp_path, n=2, seconds=0.5)
    over = dict(data={"train_cuts": str(train), "batch_size": 2},
                train={"checkpoint_every": 2, "valid_every": 0, "max_steps": 2, "tb_audio_every": 0})
    _run(micro_config(**over), tmp_path / "e")
    path = tmp_path / "e/checkpoints/step-00000002.pt"
    ckpt = torch.load(path, weights_only=False)
    del ckpt["config"]["model"]["harmonic_noise_rotation"]  # as saved before the key existed
    torch.save(ckpt, path)
    cfg = micro_config(**{**over, "train": {**over["train"], "max_steps": 3}})
    assert _run(cfg, tmp_path / "e", resume=True)["steps"] == 3
    ckpt["config"]["model"]["codebook_size"] *= 2
    torch.save(ckpt, tmp_path / "e/checkpoints/step-00000004.pt")
    with pytest.raises(DmttsError, match="different model config"):
        _run(micro_config(**{**over, "train": {**over["train"], "max_steps": 5}}), tmp_path / "e", resume=True)


def test_cli_train_rejects_bad_configs(tmp_path, capsys):
    from dmtts.cli import main

    conf = tmp_path / "c.yaml"
    conf.write_text("preset: tiny\ndistill: {mode: lm, bogus: 1}\n")
    assert main(["codec", "train", "--config", str(conf), "--exp-dir", str(tmp_path / "e")]) == 2
    assert "bogus" in capsys.readouterr().err
    conf.write_text("preset: tiny\ndata: {train_cuts: /nonexistent.jsonl.gz}\n")
    assert main(["codec", "train", "--config", str(conf), "--exp-dir", str(tmp_path / "e")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cuts = make_cuts(tmp_path, n=2, seconds=0.4)
    conf.write_text(f"preset: tiny\ndata: {{train_cuts: {cuts}, batch_size: 4}}\n")
    assert main(["codec", "train", "--config", str(conf), "--exp-dir", str(tmp_path / "e1")]) == 2
    assert "no batch" in capsys.readouterr().err
    conf.write_text(f"preset: tiny\ndistill: {{mode: sm}}\ndata: {{train_cuts: {cuts}, batch_size: 2}}\n")
    assert main(["codec", "train", "--config", str(conf), "--exp-dir", str(tmp_path / "e2")]) == 2
    assert "sm_feats" in capsys.readouterr().err


def test_learning_curve_scores_each_checkpoint_and_resumes(tmp_path, monkeypatch):
    from dmtts.eval import codec_eval
    from dmtts.eval.curve import codec_learning_curve

    train = make_cuts(tmp_path, n=4, seconds=0.6)
    cfg = micro_config(data={"train_cuts": str(train)}, train={"checkpoint_every": 2, "max_steps": 4})
    _run(cfg, tmp_path / "exp")
    curve = codec_learning_curve(tmp_path / "exp", train, tmp_path / "curve", metrics=["stoi", "pesq"])
    lines = curve.read_text().splitlines()
    assert lines[0] == "step,minutes,train_mel,stoi,pesq"
    rows = [dict(zip(lines[0].split(","), ln.split(","))) for ln in lines[1:]]
    assert [r["step"] for r in rows] == ["2", "4"]
    for r in rows:
        assert 0.0 <= float(r["stoi"]) <= 1.0 and 1.0 <= float(r["pesq"]) <= 4.6
        assert float(r["minutes"]) > 0 and float(r["train_mel"]) > 0
    assert (tmp_path / "curve/curve.png").stat().st_size > 1000
    # codebook health from the tensorboard logs: one column per level and statistic
    cb = (tmp_path / "curve/codebook.csv").read_text().splitlines()
    header = cb[0].split(",")
    assert header[0] == "step" and "perplexity_l1" in header and "used_l8" in header and "replaced_l1" in header
    first = dict(zip(header, cb[1].split(",")))
    assert first["step"] == "1" and 1.0 <= float(first["perplexity_l1"]) <= 16.0  # 16 codes per level
    assert (tmp_path / "curve/codebook.png").stat().st_size > 1000
    # a rerun scores nothing again
    monkeypatch.setattr(codec_eval, "evaluate_codec", lambda *a, **k: pytest.fail("re-scored a checkpoint"))
    assert codec_learning_curve(tmp_path / "exp", train, tmp_path / "curve", metrics=["stoi", "pesq"]) == curve
    # --every-steps: step 2 is skipped, the last checkpoint (4) is always scored
    monkeypatch.undo()
    sparse = codec_learning_curve(tmp_path / "exp", train, tmp_path / "sparse", metrics=["stoi"], every_steps=3)
    assert [ln.split(",")[0] for ln in sparse.read_text().splitlines()[1:]] == ["4"]


def test_average_state_dicts_means_floats_and_keeps_the_rest_from_the_last():
    from dmtts.train.checkpoint import average_state_dicts

    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([0.5], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([1.5], dtype=torch.float16), "n": torch.tensor(7)}
    mean = average_state_dicts([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and mean["h"].dtype == torch.float16
    assert mean["h"].item() == 1.0 and mean["n"].item() == 7
    assert torch.equal(average_state_dicts([a, b], keep_last=lambda name: name == "w")["w"], b["w"])
    with pytest.raises(DmttsError, match="keys differ"):
        average_state_dicts([a, {"w": b["w"]}])


def test_export_avg_means_the_newest_checkpoints_but_takes_the_codebooks_from_the_last(tmp_path):
    import json

    train = make_cuts(tmp_path, n=2, seconds=0.5)
    cfg = micro_config(data={"train_cuts": str(train), "valid_cuts": str(train), "batch_size": 2},
                       train={"checkpoint_every": 1, "valid_every": 4, "max_steps": 4, "tb_audio_every": 0,
                              "keep_last": 0})
    trainer = CodecTrainer(cfg, tmp_path / "e")
    trainer.run()
    ckpts = [torch.load(tmp_path / f"e/checkpoints/step-{s:08d}.pt", weights_only=False)["generator"]
             for s in (2, 3, 4)]
    out = export_checkpoint(tmp_path / "e", tmp_path / "m", avg=3)
    assert json.loads((out / "config.json").read_text())["training"]["averaged_steps"] == [2, 3, 4]
    exported = DMCodec(cfg.model)
    plain = DMCodec.from_pretrained(export_checkpoint(tmp_path / "e", tmp_path / "last"))
    averaged = DMCodec.from_pretrained(out)
    # the codebooks are the last checkpoint's, the convolutions the mean of the three
    name = "quantizer.layers.0.embed"
    assert torch.equal(averaged.state_dict()[name], plain.state_dict()[name])
    exported.load_state_dict({k: (sum(c[k] for c in ckpts) / 3 if not k.startswith("quantizer.") else v)
                              for k, v in ckpts[-1].items()})
    x = 0.1 * torch.randn(1, 1, 4000)
    with torch.inference_mode():
        assert torch.allclose(averaged.encoder(x), exported.eval().encoder(x), atol=1e-5)
        assert not torch.allclose(averaged.encoder(x), plain.encoder(x), atol=1e-5)
    with pytest.raises(DmttsError, match="--avg 5 needs 5 checkpoints"):
        export_checkpoint(tmp_path / "e", tmp_path / "x", avg=5)
    with pytest.raises(DmttsError, match="at least 1"):
        export_checkpoint(tmp_path / "e", tmp_path / "x", avg=0)
    with pytest.raises(DmttsError, match="at least 1"):
        validate_averages(tmp_path / "e", [0, 2])
    # `codec validate`: avg 1 is the run's own last validation; avg 3 scores the exported mean
    rows = validate_averages(tmp_path / "e", [1, 3])
    assert [r["steps"] for r in rows] == [[4], [2, 3, 4]]
    assert rows[0]["mel"] == trainer.last_valid["mel"] and rows[1]["mel"] != rows[0]["mel"]
    # the commands: the table as CSV; an export named by its averaged steps
    from dmtts.cli import main

    assert main(["codec", "validate", "--checkpoint", str(tmp_path / "e"), "--avg", "3", "1",
                 "--out", str(tmp_path / "v.csv")]) == 0
    lines = (tmp_path / "v.csv").read_text().splitlines()
    assert lines[0] == "avg,first_step,last_step,mel,wav_l1,distill" and lines[1].startswith("1,4,4,")
    assert float(lines[1].split(",")[3]) == pytest.approx(rows[0]["mel"], abs=1e-5) and lines[2].startswith("3,2,4,")
    assert main(["codec", "export", "--checkpoint", str(tmp_path / "e"), "--out", str(tmp_path / "c"), "--avg", "2"]) == 0
    assert json.loads((tmp_path / "c/config.json").read_text())["training"]["averaged_steps"] == [3, 4]
    # --avg best: the count with the lowest dev mel among the candidates the run has checkpoints for
    # (8 > the 4 kept is skipped), its losses recorded; none possible is a clear error
    rows = validate_averages(tmp_path / "e", [1, 2, 4])
    best = min(rows, key=lambda r: r["mel"])["avg"]
    assert main(["codec", "export", "--checkpoint", str(tmp_path / "e"), "--out", str(tmp_path / "b"),
                 "--avg", "best", "--avg-candidates", "1", "2", "4", "8"]) == 0
    record = json.loads((tmp_path / "b/config.json").read_text())["training"]
    assert record["avg_chosen_on_dev"]["avg"] == best
    assert record["avg_chosen_on_dev"]["valid_mel"] == {str(r["avg"]): pytest.approx(r["mel"], abs=1e-5) for r in rows}
    assert record.get("averaged_steps", [4]) == [4, 3, 2, 1][:best][::-1]
    with pytest.raises(DmttsError, match="fewer than any of --avg-candidates"):
        export_checkpoint(tmp_path / "e", tmp_path / "x", avg="best", avg_candidates=(8, 16))
    with pytest.raises(SystemExit):   # argparse: "expected a checkpoint count or 'best'"
        main(["codec", "export", "--checkpoint", str(tmp_path / "e"), "--out", str(tmp_path / "x"), "--avg", "most"])
