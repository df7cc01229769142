"""Lhotse Shar as training input: export, epoch partition over ranks x workers, resume, training."""

import numpy as np
import pytest
import torch

from tts_fixtures import make_tts_data, write_config

N_CUTS = 40


class CutIds:
    """A dataset that returns the ids of a batch (picklable for DataLoader workers)."""

    def __getitem__(self, cuts):
        return [c.id for c in cuts]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dmtts.data.shar_cli import export_shar

    tmp = tmp_path_factory.mktemp("shardata")
    d = make_tts_data(tmp / "tts", n_cuts=N_CUTS)
    d["index"] = export_shar(str(d["cuts"]), str(tmp / "shar"), "tts", shard_size=3, progress=False)
    d["shar"] = tmp / "shar"
    return d


def test_export_keeps_every_cut_codes_and_phonemes_and_resumes(data, tmp_path):
    from lhotse import CutSet

    from dmtts.data.shar import open_shar
    from dmtts.data.shar_cli import export_shar
    from dmtts.errors import DmttsError

    index = data["index"]
    assert index["num_cuts"] == N_CUTS and index["num_shards"] == 14 and index["fields"] == {"codes": "numpy"}
    assert [s["num_cuts"] for s in index["shards"]] == [3] * 13 + [1]
    ref = {c.id: c for c in CutSet.from_file(data["cuts"])}
    got = list(open_shar(data["shar"]))
    assert [c.id for c in got] == list(ref)  # shards in input order, cuts in input order
    for cut in got:
        assert np.array_equal(cut.load_custom("codes"), ref[cut.id].load_custom("codes"))
        assert cut.supervisions[0].custom["phonemes"] == ref[cut.id].supervisions[0].custom["phonemes"]
    # a rerun finds every shard committed and writes the same index; other settings need --overwrite
    again = export_shar(str(data["cuts"]), str(data["shar"]), "tts", shard_size=3, progress=False)
    assert again == index
    with pytest.raises(DmttsError, match="overwrite"):
        export_shar(str(data["cuts"]), str(data["shar"]), "tts", shard_size=4, progress=False)
    with pytest.raises(DmttsError, match="has no lm_feats: run `dmtts teachers extract`"):
        export_shar(str(data["cuts"]), str(tmp_path / "x"), "recording,codes,lm_feats", progress=False)
    with pytest.raises(DmttsError, match="no shar_index.json"):
        open_shar(tmp_path)


def _jsonl_epoch(path, rank, world_size, epoch):
    from lhotse import CutSet
    from lhotse.dataset import DynamicBucketingSampler

    sampler = DynamicBucketingSampler(CutSet.from_jsonl_lazy(path), max_duration=1.0, num_buckets=2, shuffle=True,
                                      drop_last=False, buffer_size=100, seed=1, world_size=world_size, rank=rank)
    sampler.set_epoch(epoch)
    return [[c.id for c in batch] for batch in sampler]


def _shar_epoch(cuts, rank, world_size, epoch, workers=2, skip=0, drop_last=False):
    from dmtts.data.shar import shar_loader, shar_sampler

    sampler = shar_sampler(cuts, ["codes"], rank, world_size, seed=1, shuffle=True, drop_last=drop_last,
                           num_buckets=2, max_duration=1.0, buffer_size=100)
    sampler.set_epoch(epoch)
    return list(shar_loader(CutIds(), sampler, workers, seed=0, skip=skip))


def test_two_ranks_two_workers_see_every_cut_once_per_epoch_like_jsonl(data):
    from dmtts.data.shar import open_shar

    cuts = open_shar(data["shar"])
    every = {f"utt{i:03d}" for i in range(N_CUTS)}
    orders = []
    for epoch in (0, 1):
        shar_ids, jsonl_ids = [], []
        for rank in (0, 1):
            shar_ids += [i for b in _shar_epoch(cuts, rank, 2, epoch) for i in b]
            jsonl_ids += [i for b in _jsonl_epoch(data["cuts"], rank, 2, epoch) for i in b]
        assert len(shar_ids) == len(set(shar_ids)) == N_CUTS and set(shar_ids) == every
        assert len(jsonl_ids) == len(set(jsonl_ids)) == N_CUTS and set(jsonl_ids) == every
        orders.append(shar_ids)
    assert orders[0] != orders[1]  # shards and buffers reshuffled per epoch
    # drop_last drops each worker's last partial batch: only fewer cuts, never one twice
    dropped = [i for r in (0, 1) for b in _shar_epoch(cuts, r, 2, 0, drop_last=True) for i in b]
    assert len(dropped) == len(set(dropped)) < N_CUTS


@pytest.mark.parametrize("skip", [3, 4])
def test_resume_mid_epoch_continues_the_same_batches(data, skip):
    from dmtts.data.shar import open_shar

    cuts = open_shar(data["shar"])
    full = _shar_epoch(cuts, 0, 2, 1)
    assert len(full) > skip + 2
    assert _shar_epoch(cuts, 0, 2, 1, skip=skip) == full[skip:]


def _final_loss(exp_dir, window=5):
    from dmtts.train.checkpoint import latest_checkpoint

    hist = torch.load(latest_checkpoint(exp_dir), weights_only=False)["train_state"]["history"]["train"]
    return hist[0][1], float(np.mean([v for _, v in hist[-window:]]))


def test_tiny_ar_trains_from_shar_like_from_jsonl(data, tmp_path):
    from dmtts.tts.train import train

    losses = {}
    for name, path in (("jsonl", data["cuts"]), ("shar", data["shar"])):
        cfg = write_config(tmp_path / f"{name}.yaml", data, **{"training.max_steps": 8, "data.train_cuts": str(path),
                                                               "training.log_interval": 1})
        train("ar", str(cfg), str(tmp_path / name), progress=False)
        losses[name] = _final_loss(tmp_path / name)
    (first_j, last_j), (first_s, last_s) = losses["jsonl"], losses["shar"]
    assert last_j < first_j and last_s < first_s  # both learn
    assert 0.7 < last_s / last_j < 1.4, losses  # same range; the batches differ (order)


def test_tiny_codec_trains_from_shar_like_from_jsonl(tmp_path):
    from codec_helpers import make_cuts, micro_config

    from dmtts.codec.train import CodecTrainer
    from dmtts.data.shar_cli import export_shar

    cuts = make_cuts(tmp_path, n=8, seconds=0.6, sm_dim=8)
    index = export_shar(str(cuts), str(tmp_path / "shar"), "codec", shard_size=2, progress=False)
    assert set(index["fields"]) == {"recording", "sm_feats"}
    mels = {}
    for name, path in (("jsonl", cuts), ("shar", tmp_path / "shar")):
        torch.manual_seed(0)
        cfg = micro_config(data={"train_cuts": str(path), "sampler": "dynamic_bucketing", "num_buckets": 2},
                           distill={"mode": "sm", "sm_dim": 8}, train={"max_steps": 6, "device": "cpu"})
        trainer = CodecTrainer(cfg, tmp_path / f"exp_{name}")
        summary = trainer.run()
        assert summary["steps"] == 6 and summary["epochs"] == 1  # 8 cuts = 4 batches of 2 per epoch
        mels[name] = [h["mel"] for h in trainer.history]
    assert all(np.isfinite(m).all() for m in mels.values())
    ratio = np.mean(mels["shar"]) / np.mean(mels["jsonl"])
    assert 0.7 < ratio < 1.4, mels  # same range; the crops and batches differ (order)


def test_cli_exports_and_rejects_unknown_fields(data, tmp_path, capsys):
    from dmtts.cli import main

    assert main(["shar", "export", "--cuts", str(data["cuts"]), "--output-dir", str(tmp_path / "s"),
                 "--fields", "codes", "--shard-size", "16", "--no-progress"]) == 0
    assert "40 cuts in 3 shards (codes)" in capsys.readouterr().out
    assert main(["shar", "export", "--cuts", str(data["cuts"]), "--output-dir", str(tmp_path / "t"),
                 "--fields", "codes,phonemes"]) == 2
    assert "--fields 'codes,phonemes': give codec, tts, tts+audio or a comma list" in capsys.readouterr().err
