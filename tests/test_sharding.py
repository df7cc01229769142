"""Sharded offline stages (dmtts.data.sharding): the shard/commit/resume/merge logic with ranks
simulated one after the other, then the real thing: ``torchrun`` with 2 gloo ranks running
``dmtts tokenize`` and ``dmtts teachers extract``, compared with one process, including runs
killed mid-way and resumed with another world size."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dmtts.data.sharding import ShardContext, ShardedJob, read_json_lines
from dmtts.errors import DmttsError
from test_teachers import tiny_bert_dir, tiny_hubert_dir  # noqa: F401 - the tiny random teachers (fixtures)

REPO = Path(__file__).resolve().parents[1]


_BROADCASTS: dict[str, str] = {}


@dataclass(frozen=True)
class SimulatedRank(ShardContext):
    """A rank of a world whose ranks run one after the other in this process: collectives are
    replaced by what they would return (rank 0 runs first; the others get what it broadcast)."""

    work_dir: str = ""

    def barrier(self):
        pass

    def broadcast(self, obj):
        if self.is_main:
            _BROADCASTS[self.work_dir] = json.dumps(obj)
        return json.loads(_BROADCASTS[self.work_dir])


def _items(tmp_path: Path, n: int, name: str = "items.jsonl.gz") -> Path:
    path = tmp_path / name
    with gzip.open(path, "wt") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"c{i:02d}", "x": i * i}) + "\n")
    return path


def _run_ranks(inp, work, world_size, settings=None, unit_size=2, stop_after=None):
    """Every rank of a world processes its shard (record = {"y": x + 1}); ``stop_after`` cuts short
    the rank's work after that many items (its open unit is lost, like a hard kill)."""
    seen = []
    for rank in range(world_size):
        ctx = SimulatedRank(rank=rank, world_size=world_size, work_dir=str(work))
        job = ShardedJob(inp, work, ctx, settings=settings, reader=read_json_lines)
        unit, n = job.new_unit(), 0
        for index, item in job.todo():
            assert index % world_size == rank
            seen.append(item["id"])
            if stop_after is not None and n == stop_after:
                break
            unit.add(index, item["id"], {"y": item["x"] + 1})
            n += 1
            if len(unit) == unit_size:
                job.commit(unit)
                unit = job.new_unit()
        else:
            job.commit(unit)
    return job, seen


def test_shards_are_disjoint_resumable_with_other_world_sizes_and_merge_in_input_order(tmp_path):
    inp = _items(tmp_path, 11)
    work = tmp_path / "work"
    # world size 3, each rank stops after 1 committed unit (2 items) and loses the third item
    _, seen = _run_ranks(inp, work, 3, stop_after=2)
    assert len(seen) == len(set(seen)) == 9  # nobody saw another rank's cut
    # resume with world size 2: only what was not committed is computed, nothing twice
    job, seen = _run_ranks(inp, work, 2)
    assert sorted(seen) == ["c06", "c07", "c08", "c09", "c10"]
    merged = list(job.merged())
    assert [i for i, _, _ in merged] == list(range(11))
    assert [r["y"] for _, _, r in merged] == [i * i + 1 for i in range(11)]
    # a third run finds nothing to do
    job, seen = _run_ranks(inp, work, 4)
    assert seen == [] and job.num_done == 11
    out = tmp_path / "merged.jsonl"
    assert job.write_merged(out) == 11
    assert [json.loads(line)["y"] for line in out.read_text().splitlines()] == [i * i + 1 for i in range(11)]


def test_blocks_of_consecutive_positions_go_to_one_rank(tmp_path):
    inp = _items(tmp_path, 11)
    blocks = {}
    for rank in range(2):
        ctx = SimulatedRank(rank=rank, world_size=2, work_dir=str(tmp_path / "w"))
        job = ShardedJob(inp, tmp_path / "w", ctx, reader=read_json_lines, block_size=3)
        blocks[rank] = [[i for i, _ in block] for block in job.todo_blocks()]
        assert job.num_todo == sum(map(len, blocks[rank]))
    assert blocks == {0: [[0, 1, 2], [6, 7, 8]], 1: [[3, 4, 5], [9, 10]]}


def test_uncommitted_leftovers_are_discarded_and_a_changed_input_or_setting_is_refused(tmp_path):
    inp = _items(tmp_path, 4)
    work = tmp_path / "work"
    job = ShardedJob(inp, work, settings={"model": "a"}, reader=read_json_lines)
    unit = job.new_unit()
    data = unit.data_path("codes", ".h5")
    data.write_bytes(b"x")
    unit.add(0, "c00", {"y": 1})
    job.commit(unit, files=[data])
    orphan = job.new_unit().data_path("codes", ".h5")
    orphan.write_bytes(b"half written")
    own_temp = work / ".run0000-rank00000-000009.jsonl.gz.x1.tmp.jsonl.gz"  # an interrupted atomic write
    foreign = work / ".someone_else.jsonl.x2.tmp.jsonl"
    own_temp.write_bytes(b"")
    foreign.write_bytes(b"")
    job = ShardedJob(inp, work, settings={"model": "a"}, reader=read_json_lines)
    assert data.exists() and not orphan.exists() and job.num_done == 1 and job.run == 1
    assert not own_temp.exists() and foreign.exists()  # only this module's own leftovers go
    with pytest.raises(DmttsError, match="other settings"):
        ShardedJob(inp, work, settings={"model": "b"}, reader=read_json_lines)
    _items(tmp_path, 5)  # the input changed
    with pytest.raises(DmttsError, match="--overwrite"):
        ShardedJob(inp, work, settings={"model": "a"}, reader=read_json_lines)
    job = ShardedJob(inp, work, settings={"model": "a"}, reader=read_json_lines, overwrite=True)
    assert job.num_done == 0 and job.num_items == 5 and not data.exists()


def test_repeated_cut_ids_are_a_clear_error_at_the_merge(tmp_path):
    inp = tmp_path / "dup.jsonl"
    inp.write_text("".join(json.dumps({"id": i}) + "\n" for i in ["a", "b", "a"]))
    job = ShardedJob(inp, tmp_path / "w", reader=read_json_lines)
    unit = job.new_unit()
    for index, item in job.todo():
        unit.add(index, item["id"], {})
    job.commit(unit)
    with pytest.raises(DmttsError, match="repeated cut ids \\(a\\)"):
        job.write_merged(tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_training_and_sharded_stages_read_the_torchrun_environment_alike(monkeypatch):
    """One parser (dmtts.utils.torchrun_env) for DDP training and the sharded stages: the same
    ranks from the same variables, the same one-line error for a bad value."""
    from dmtts.data.sharding import shard_context
    from dmtts.train.distributed import init_distributed
    from dmtts.utils import torchrun_env

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = torchrun_env()
    assert (env.rank, env.world_size, env.local_rank, env.is_main, env.is_distributed) == (0, 1, 0, True, False)
    info, ctx = init_distributed("cpu"), shard_context("cpu")
    assert (info.rank, info.world_size, info.local_rank) == (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    monkeypatch.setenv("RANK", "one")
    for start in (lambda: init_distributed("cpu"), lambda: shard_context("cpu")):
        with pytest.raises(DmttsError, match="RANK='one' is not an integer"):
            start()
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for start in (lambda: init_distributed("cpu"), lambda: shard_context("cpu")):
        with pytest.raises(DmttsError, match="bad torchrun environment: RANK=2 WORLD_SIZE=2"):
            start()


# ----------------------------------------------------------------------------- torchrun, 2 gloo ranks

# Each launch imports torch/lhotse/transformers in 2 fresh processes (the bulk of these tests' time).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _dmtts(args, nproc=1, kill_after=None, expect_ok=True):
    """Run ``dmtts ARGS`` in this process (``nproc=1``, as a plain command would) or as ``nproc``
    torchrun ranks (gloo, CPU); ``kill_after="N:RANK"`` SIGKILLs that rank after N commits."""
    args = [str(a) for a in args]
    if nproc == 1:
        from dmtts.cli import main

        assert main(args) == 0
        return None
    env = dict(ENV)
    if kill_after:
        env["DMTTS_SHARD_KILL_AFTER_UNITS"] = kill_after
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                        "-m", "dmtts.cli", "--log-level", "WARNING", *args], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    if expect_ok:
        assert r.returncode == 0, r.stderr[-3000:]
    else:
        assert r.returncode != 0, r.stdout[-2000:]
    return r


@pytest.fixture(autouse=True)
def _one_thread():
    """The in-process runs use one intra-op thread, like each torchrun rank: float results are
    only bit-identical between equal thread counts (and an earlier test may have changed it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8 short cuts (one of them without its audio file) and a tiny codec with k-means codebooks."""
    import soundfile as sf
    import torch
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    from dmtts.codec.model import DMCodec

    root = tmp_path_factory.mktemp("sharding")
    rng = np.random.default_rng(7)
    words = ["the cat sat", "hello world", "a dog", "speech codec", "the mat", "a cat is a cat", "dog sat", "hello"]
    cuts, wavs = [], []
    for i, text in enumerate(words):
        t = np.arange(int((0.45 + 0.11 * ((i * 5) % 8)) * 16000)) / 16000
        wav = (0.2 * np.sin(2 * np.pi * (140 + 30 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        sf.write(root / f"u{i}.wav", wav, 16000)
        wavs.append(wav)
        rec = Recording.from_file(root / f"u{i}.wav", recording_id=f"u{i}")
        sup = SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=rec.duration, text=text)
        cuts.append(MonoCut(id=f"u{i}", start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(root / "small_cuts.jsonl.gz")
    (root / "u5.wav").unlink()  # unreadable: reported by whichever rank owns it, retried next time
    torch.manual_seed(0)
    codec = DMCodec.from_preset("tiny")
    codec.train()
    with torch.no_grad():  # k-means codebooks from these signals: real, varied codes
        codec(torch.from_numpy(np.concatenate(wavs))[None, None])
    codec.eval()
    codec.save_pretrained(root / "codec")
    return {"root": root, "cuts": root / "small_cuts.jsonl.gz", "codec": root / "codec"}


def _manifest(path: Path) -> list[dict]:
    """The merged manifest as dicts without storage paths (those name per-rank files)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "storage_path"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    with gzip.open(path, "rt") as f:
        return [strip(json.loads(line)) for line in f]


def _committed_positions(progress: Path) -> list[int]:
    return sorted(int(i) for p in progress.glob("run*.idx.npy") for i in np.load(p))


def _assert_same_output(a: Path, b: Path, field_names):
    from lhotse import load_manifest_lazy

    assert _manifest(a) == _manifest(b)  # same cuts, same order, same fields
    for ca, cb in zip(load_manifest_lazy(a), load_manifest_lazy(b)):
        for name in field_names:
            x, y = ca.load_custom(name), cb.load_custom(name)
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)


def test_tokenize_two_ranks_equal_one_process_and_a_killed_run_resumes_with_one(corpus, tmp_path):
    args = ["tokenize", "--codec", corpus["codec"], "--cuts", corpus["cuts"], "--device", "cpu", "--chunk-size", "1",
            "--batch-duration", "1.5", "--no-progress"]
    _dmtts([*args, "--output-dir", tmp_path / "one"])
    _dmtts([*args, "--output-dir", tmp_path / "two"], nproc=2)
    one, two = tmp_path / "one" / "small_cuts.jsonl.gz", tmp_path / "two" / "small_cuts.jsonl.gz"
    ids = [c["id"] for c in _manifest(one)]
    assert ids == ["u0", "u1", "u2", "u3", "u4", "u6", "u7"]
    _assert_same_output(one, two, ["codes"])
    assert (tmp_path / "two" / "small_cuts_failed.txt").read_text().startswith("u5\t")
    stored = {p.name.split(".")[1] for p in (tmp_path / "two" / "small_cuts_codes").glob("codes.*.h5")}
    assert {s.split("-")[1] for s in stored} == {"rank00000", "rank00001"}  # each rank wrote its own files

    # rank 1 is SIGKILLed after its first commit; torchrun stops rank 0 too
    killed = tmp_path / "killed"
    _dmtts([*args, "--output-dir", killed], nproc=2, kill_after="1:1", expect_ok=False)
    progress = killed / "small_cuts_codes" / "progress"
    before = _committed_positions(progress)
    assert 1 <= len(before) < 7 and not (killed / "small_cuts.jsonl.gz").exists()
    _dmtts([*args, "--output-dir", killed])  # resumed by one process
    after = _committed_positions(progress)
    assert after == [0, 1, 2, 3, 4, 6, 7]  # every cut once: nothing computed twice
    _assert_same_output(one, killed / "small_cuts.jsonl.gz", ["codes"])


def test_teacher_extraction_interrupted_in_one_process_then_finished_by_two_ranks_equals_one_process(
        corpus, tmp_path, tiny_bert_dir, tiny_hubert_dir):  # noqa: F811
    from dmtts.teachers.extract import extract_teacher_features
    from dmtts.teachers.lm import LMTeacher
    from dmtts.teachers.sm import load_sm_teacher

    args = ["teachers", "extract", "--cuts", corpus["cuts"], "--lm-dir", tiny_bert_dir, "--sm-dir", tiny_hubert_dir,
            "--device", "cpu", "--batch-size", "2", "--shard-size", "1", "--no-progress"]
    name = "small_cuts_with_feats.jsonl.gz"
    _dmtts([*args, "--output-dir", tmp_path / "one"])
    assert [c["id"] for c in _manifest(tmp_path / "one" / name)] == ["u0", "u1", "u2", "u3", "u4", "u6", "u7"]

    # one process, the teachers of the CLI; Ctrl-C arrives in the second batch
    lm = LMTeacher(tiny_bert_dir, batch_size=2)
    sm = load_sm_teacher(sm_dir=str(tiny_hubert_dir), sm_ct2_dir=None, layer="avg", device="cpu", batch_size=2)
    real_extract, calls = sm.extract, []

    def interrupted(wavs):
        calls.append(len(wavs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_extract(wavs)

    sm.extract = interrupted
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        extract_teacher_features(corpus["cuts"], out, lm=lm, sm=sm, batch_size=2, shard_size=1, progress=False)
    progress = out / "small_cuts_feats" / "progress"
    assert _committed_positions(progress) == [0, 1]
    # finished by 2 ranks, in batches (blocks) of 2: rank 1 takes positions 2-3 and 6-7, rank 0 4-5
    _dmtts([*args, "--output-dir", out], nproc=2)
    assert _committed_positions(progress) == [0, 1, 2, 3, 4, 6, 7]  # every cut once
    ranks = {p.name.split("-")[1] for p in progress.glob("run0001-*.jsonl.gz")}
    assert ranks == {"rank00000", "rank00001"}
    _assert_same_output(tmp_path / "one" / name, out / name, ["lm_feats", "sm_feats"])
    skipped = (out / "small_cuts_skipped.jsonl").read_text().splitlines()
    assert [json.loads(line)["cut_id"] for line in skipped] == ["u5"]


def test_recipe_launcher_passes_the_multi_node_options_to_torchrun(tmp_path):
    """egs_tools/common.sh: dmtts_dist picks dmtts / torchrun --standalone / static multi-node
    rendezvous; only node 0 writes step markers (a fake torchrun and dmtts print their arguments)."""
    for tool in ("torchrun", "dmtts"):
        (tmp_path / tool).write_text(f'#!/usr/bin/env bash\necho "{tool} $*"\n')
        (tmp_path / tool).chmod(0o755)
    script = tmp_path / "t.sh"
    script.write_text(f"""#!/usr/bin/env bash
set -eu
done_dir={tmp_path}/done
. {REPO}/egs_tools/common.sh
num_gpus=1; num_nodes=1; node_rank=0; master_addr=node0; master_port=29511
dmtts_dist tokenize --cuts a
num_gpus=4
dmtts_dist tokenize --cuts a
num_nodes=2; node_rank=1
dmtts_dist codec train --config c
mark_done x; stage_done x || echo "node 1 wrote no marker"
node_rank=0; mark_done x; stage_done x && echo "node 0 marked x"
node_rank=1; wait_done x && echo "node 1 saw x"
""")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "dmtts tokenize --cuts a",
        "torchrun --standalone --nproc-per-node 4 -m dmtts.cli tokenize --cuts a",
        "torchrun --nnodes 2 --node-rank 1 --master-addr node0 --master-port 29511 --nproc-per-node 4 -m dmtts.cli "
        "codec train --config c",
        "node 1 wrote no marker", "node 0 marked x", "node 1 saw x"]
    for recipe in ("librispeech_codec", "libriheavy"):
        help_text = subprocess.run([str(REPO / "recipes" / recipe / "run.sh"), "--help"], capture_output=True,
                                   text=True).stdout
        for option in ("--num-gpus", "--num-nodes", "--node-rank", "--master-addr", "--master-port"):
            assert option in help_text, (recipe, option)
