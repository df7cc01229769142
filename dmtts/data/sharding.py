"""Sharded, resumable offline stages under ``torchrun`` (teacher extraction, tokenization, pair
synthesis, evaluation).

One command line runs as one process or as N ranks::

    dmtts tokenize --codec C --cuts IN --output-dir OUT                        # 1 process
    torchrun --nproc-per-node 8 -m dmtts.cli tokenize --codec C --cuts IN ...  # 8 ranks, 1 node
    torchrun --nnodes 2 --node-rank R --master-addr H --master-port P --nproc-per-node 8 \\
        -m dmtts.cli tokenize ...                                              # 16 ranks, 2 nodes

and writes the same merged output (same records, same order) whatever the world size.

How it works
------------
* Ranks. ``shard_context(device)`` reads torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``
  and starts ``torch.distributed`` (gloo for a CPU stage, nccl for a CUDA one, with a long
  timeout because ranks wait for each other at the final barrier). Without those variables (or
  with ``WORLD_SIZE=1``) there is no process group and every collective below is a no-op.
* Shards. The input manifest is read lazily (one item at a time, never a list). The item at
  position ``i`` (0-based, input order) belongs to rank ``(i // block_size) % world_size``;
  ``job.todo()`` yields this rank's ``(i, item)`` pairs that are not done yet. Disjoint and
  deterministic. ``block_size`` (default 1) is for stages whose numbers depend on what is
  batched together (padding, kernel shapes): ``job.todo_blocks()`` yields a block's remaining
  items as one list, so a stage that makes one batch (or one duration-sorted chunk) per block
  batches the same items together for any world size, and its output stays bit-identical.
* Commit units. A rank packs its finished items into units of the stage's choosing (a few
  hundred cuts). A unit has a tag ``runRRRR-rankKKKKK-SSSSSS`` and may own data files (HDF5 of
  features / codes) named ``<stem>.<tag><suffix>`` in the job's ``data_dir``.
  ``job.commit(unit, files)`` fsyncs those files, writes ``<tag>.idx.npy`` (the input positions)
  and then, atomically, ``<tag>.jsonl.gz`` (one ``{"index", "id", "record"}`` JSON line per item,
  sorted by index): that last file is the commit marker. A hard kill loses at most the open unit.
* Resume. ``ShardedJob(...)`` (collective) lets rank 0 check ``meta.json`` (sha256 of the input
  file and the stage's ``settings``; a mismatch is a ``DmttsError`` unless ``overwrite``), delete
  uncommitted leftovers (data files and indexes of units that never committed, temp files),
  and start a new run number; the others wait. Rank 0 broadcasts its list of committed units
  (one view of the directory for all nodes) and every rank marks as done the positions of ALL of
  them, whatever world size wrote them, so a rerun with any world size skips them and no item is
  ever computed twice.
* Merge. After ``job.finish()`` (a barrier; rank 0 also gathers the names of the units every
  rank committed), rank 0 calls ``job.merged()``: a streaming k-way merge (one open file per
  (run, rank)) of every committed unit, in input order, dropping a repeated position and failing
  with a clear error on a repeated id. Several nodes need a filesystem they all see. ``job.write_merged(path)``
  writes the records as JSON lines (a lhotse manifest when the records are cut dicts).

Use from a stage::

    from dmtts.data.sharding import ShardedJob, shard_context, sigterm_as_interrupt

    ctx = shard_context(args.device)                     # collective under torchrun
    job = ShardedJob(cuts_path, work_dir=OUT / "x_progress", ctx=ctx, data_dir=OUT / "x_data",
                     settings={"codec": ..., "n_q": 8}, overwrite=args.overwrite)
    failed = []
    unit = job.new_unit()
    try:
        with sigterm_as_interrupt():                     # `kill` / torchrun teardown commits too
            for index, cut in job.todo():                # this rank's remaining cuts, input order
                writer = writer or Writer(unit.data_path("codes", ".h5"))
                ... compute; on failure: failed.append((index, cut.id, reason)); continue
                unit.add(index, cut.id, cut_with_result.to_dict())
                if len(unit) >= unit_size:
                    writer.close(); job.commit(unit, files=[...]); unit = job.new_unit(); writer = None
    finally:
        close the writer; job.commit(unit, files=[...])  # keeps finished work on Ctrl-C / errors
    job.finish()                                         # barrier: every rank committed
    failures = ctx.gather(failed)                        # list of per-rank lists on rank 0, else None
    if ctx.is_main:
        n = job.write_merged(OUT / "out.jsonl.gz")       # input order, atomic
    ctx.close()

Inputs are JSON-lines files (``.jsonl`` / ``.jsonl.gz``): lhotse manifests by default (items
are cuts, ids ``cut.id``), or plain JSON objects with an ``"id"`` key with
``reader=read_json_lines``. Every rank streams the file but parses only its own lines.
Records must be JSON-serialisable dicts. Tests can set ``DMTTS_SHARD_KILL_AFTER_UNITS=N`` (or
``N:RANK``) to SIGKILL a rank right after its N-th commit, simulating a crash.

Modules: this one is the job (``ShardedJob``: resume, this rank's work, commits, the merge) and
the import point of the stages; ``shard_ranks`` sets up the ranks (``ShardContext``,
``shard_context``, ``sigterm_as_interrupt``); ``shard_inputs`` reads the input;
``shard_units`` writes and lists commit units; ``shard_merge`` merges them.
"""


from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from dmtts.data.shard_inputs import LINE_DECODERS, fingerprint, item_id, open_text, read_json_lines, read_lhotse_items
from dmtts.data.shard_merge import merge_streams, merged_unique, write_records
from dmtts.data.shard_ranks import DEFAULT_TIMEOUT_S, ShardContext, shard_context, sigterm_as_interrupt
from dmtts.data.shard_units import (META_NAME, Unit, committed_tags, committed_units, fsync_file, remove_job_files,
                                    remove_uncommitted, unit_tag, write_unit)
from dmtts.errors import DmttsError
from dmtts.utils import atomic_write_text

__all__ = [
    "DEFAULT_TIMEOUT_S", "FORMAT_VERSION", "KILL_ENV", "META_NAME", "ShardContext", "ShardedJob", "Unit", "item_id",
    "read_json_lines", "read_lhotse_items", "shard_context", "sigterm_as_interrupt",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KILL_ENV = "DMTTS_SHARD_KILL_AFTER_UNITS"


class ShardedJob:
    """One sharded, resumable pass over a manifest; see the module docstring.

    Collective: every rank constructs it with the same arguments. ``work_dir`` holds the commit
    markers and ``meta.json``; ``data_dir`` (default ``work_dir``) the units' data files.
    """

    def __init__(self, input_path: str | Path, work_dir: str | Path, ctx: ShardContext | None = None,
                 settings: dict | None = None, overwrite: bool = False, data_dir: str | Path | None = None,
                 reader: Callable[[Path], Iterable[Any]] = read_lhotse_items, input_flag: str = "--cuts",
                 block_size: int = 1):
        self.input_path = Path(input_path)
        self.work_dir = Path(work_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else self.work_dir
        self.ctx = ctx or ShardContext()
        self.reader = reader
        self.input_flag = input_flag
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.block_size = int(block_size)
        self.settings = json.loads(json.dumps(settings or {}))  # normalised for comparison
        self._seq = 0
        self._commits = 0
        self._my_tags: list[str] = []  # units this rank committed in this run
        self._reported_tags: set[str] = set()  # rank 0, after finish(): every rank's
        self._kill_after = self._parse_kill_env()
        if not self.input_path.is_file():
            raise DmttsError(f"{input_flag} '{self.input_path}' does not exist or is not a file")
        if not self.input_path.name.endswith((".jsonl", ".jsonl.gz")):
            raise DmttsError(f"{input_flag} '{self.input_path}': sharded stages read JSON-lines manifests "
                             "(.jsonl or .jsonl.gz); convert it with lhotse (CutSet.from_file(x).to_file('x.jsonl.gz'))")
        # Rank 0 validates and cleans up while the others wait; its verdict (meta or an error
        # message) is broadcast so that every rank fails the same way instead of hanging.
        verdict = None
        if self.ctx.is_main:
            try:
                verdict = self._prepare(overwrite)
            except DmttsError as e:
                verdict = {"error": str(e)}
        verdict = self.ctx.broadcast(verdict)
        if "error" in verdict:
            raise DmttsError(verdict["error"])
        # rank 0's listing (after its clean-up) is the one truth: another node's view of the
        # directory may lag on a network filesystem
        committed = verdict.pop("committed")
        self.meta = verdict
        self.run = int(verdict["runs"])
        self.num_items = int(verdict["num_items"])
        self.done = np.zeros(self.num_items, dtype=bool)
        for tag in committed:
            idx = np.load(self.work_dir / f"{tag}.idx.npy")
            self.done[idx[idx < self.num_items]] = True
        self.num_done = int(self.done.sum())
        mine = (np.arange(self.num_items) // self.block_size) % self.ctx.world_size == self.ctx.rank
        self.num_todo = int((mine & ~self.done).sum())

    # --- preparation (rank 0)

    def _prepare(self, overwrite: bool) -> dict:
        meta_path = self.work_dir / META_NAME
        if overwrite:
            self.clear()
        sha, count = fingerprint(self.input_path)
        meta = None
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise DmttsError(f"'{meta_path}' is unreadable ({e}): pass --overwrite to start over") from None
            if meta.get("input_sha256") != sha:
                raise DmttsError(
                    f"'{self.work_dir}' holds results for another version of {self.input_flag} "
                    f"(was '{meta.get('input')}', the file changed): pass --overwrite to start over, or use "
                    "another output directory")
            if meta.get("settings") != self.settings:
                raise DmttsError(
                    f"'{self.work_dir}' holds results made with other settings ({meta.get('settings')}): pass "
                    "--overwrite to discard them, or use another output directory")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        remove_uncommitted(self.work_dir, self.data_dir)
        meta = {"format_version": FORMAT_VERSION, "input": str(self.input_path), "input_sha256": sha,
                "num_items": count, "settings": self.settings, "runs": (meta["runs"] + 1) if meta else 0,
                "last_world_size": self.ctx.world_size}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        return {**meta, "committed": committed_tags(self.work_dir)}

    def clear(self) -> None:
        """Delete this job's own files (markers, indexes, unit data files, meta), nothing else."""
        from lhotse.features.io import close_cached_file_handles

        close_cached_file_handles()  # lhotse caches open HDF5 handles by path
        remove_job_files(self.work_dir, self.data_dir)

    @staticmethod
    def _parse_kill_env() -> tuple[int, int | None] | None:
        value = os.environ.get(KILL_ENV, "").strip()
        if not value:
            return None
        n, _, rank = value.partition(":")
        return int(n), (int(rank) if rank else None)

    # --- work (every rank)

    def todo(self) -> Iterator[tuple[int, Any]]:
        """This rank's items that are not done yet, as ``(input position, item)``, lazily, in input order."""
        index = -1
        decode = LINE_DECODERS.get(self.reader)
        if decode is not None:  # a JSON-lines reader: only this rank's lines are parsed
            with open_text(self.input_path) as f:
                for line in f:
                    if not line.strip():
                        continue
                    index += 1
                    if index >= self.num_items:
                        break
                    if self.owns(index) and not self.done[index]:
                        yield index, decode(line)
        else:
            for index, item in enumerate(self.reader(self.input_path)):
                if index >= self.num_items:
                    break
                if self.owns(index) and not self.done[index]:
                    yield index, item
        if index + 1 != self.num_items:
            raise DmttsError(f"{self.input_flag} '{self.input_path}' changed while it was being processed "
                             f"({index + 1} items read, {self.num_items} expected)")

    def owns(self, index: int) -> bool:
        """Whether the item at input position ``index`` belongs to this rank in this run."""
        return (index // self.block_size) % self.ctx.world_size == self.ctx.rank

    def todo_blocks(self) -> Iterator[list[tuple[int, Any]]]:
        """This rank's remaining items, one list per block of ``block_size`` input positions (done
        items left out, empty blocks skipped), lazily, in input order."""
        block: list[tuple[int, Any]] = []
        current = -1
        for index, item in self.todo():
            if block and index // self.block_size != current:
                yield block
                block = []
            current = index // self.block_size
            block.append((index, item))
        if block:
            yield block

    def new_unit(self) -> Unit:
        unit = Unit(unit_tag(self.run, self.ctx.rank, self._seq), self.data_dir)
        self._seq += 1
        return unit

    def commit(self, unit: Unit, files: Iterable[str | Path] = ()) -> int:
        """Make ``unit`` durable: fsync its data ``files``, write its index, then its marker.

        An empty unit commits nothing and its data files are deleted. Returns the items committed.
        """
        files = [Path(f) for f in files]
        if not unit.items:
            for f in files:
                f.unlink(missing_ok=True)
            return 0
        for f in files:
            fsync_file(f)
        items = sorted(unit.items, key=lambda t: t[0])
        index = np.array([i for i, _, _ in items], dtype=np.int64)
        if np.any(np.diff(index) <= 0) or not self.owns(int(index[0])) or np.any(self.done[index]):
            raise ValueError(f"unit {unit.tag} holds repeated, foreign or already-done positions")
        write_unit(self.work_dir, unit.tag, items)
        self.done[index] = True
        self._commits += 1
        self._my_tags.append(unit.tag)
        if self._kill_after is not None:
            n, rank = self._kill_after
            if self._commits >= n and rank in (None, self.ctx.rank):
                log.warning("%s=%s: killing rank %d after %d commits", KILL_ENV, os.environ[KILL_ENV],
                            self.ctx.rank, self._commits)
                os.kill(os.getpid(), signal.SIGKILL)
        return len(items)

    def finish(self) -> None:
        """Barrier: every rank has committed its shard (collective). Rank 0 also learns every
        rank's committed units by name: on a network filesystem a directory listing on one node
        can lag behind files another node has just written, an open by name does not."""
        self.ctx.barrier()
        gathered = self.ctx.gather(self._my_tags)
        if self.ctx.is_main:
            self._reported_tags = {tag for tags in gathered for tag in tags}

    # --- merge (rank 0, after finish)

    def merged(self) -> Iterator[tuple[int, str, dict]]:
        """Every committed ``(index, id, record)`` in input order; a position committed twice is
        kept once; a cut id at two positions is a ``DmttsError`` (raised at the end)."""
        return merged_unique(self._merge_streams, self.input_flag, self.input_path)

    def _merge_streams(self) -> Iterator[tuple[int, str, dict]]:
        streams = committed_units(self.work_dir, self._reported_tags)
        return merge_streams(([p for _, p in markers] for markers in streams.values()), self.num_items)

    def write_merged(self, path: str | Path, transform: Callable[[dict], dict | None] | None = None) -> int:
        """Write every merged record (optionally transformed; None drops it) as JSON lines to ``path``
        (gzip for ``.gz``), atomically. Returns the number of lines."""
        return write_records(path, self.merged(), transform)
