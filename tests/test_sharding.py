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

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SimulatedRank(ShardContext):
    """A rank of a world whose ranks run one after the other in this process: collectives are
    replaced by what they would return (rank 0 prepares first; the others read its meta.json)."""

    work_dir: str = ""

    def barrier(self):
        pass

    def broadcast(self, obj):
        return obj if self.is_main else json.loads((Path(self.work_dir) / "meta.json").read_text())


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
    job = ShardedJob(inp, work, settings={"model": "a"}, reader=read_json_lines)
    assert data.exists() and not orphan.exists() and job.num_done == 1 and job.run == 1
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
