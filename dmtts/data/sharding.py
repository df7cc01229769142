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
"""

from __future__ import annotations

import array
import contextlib
import datetime
import gzip
import hashlib
import heapq
import json
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from dmtts.errors import DmttsError
from dmtts.utils import RankRoles, atomic_path, atomic_write_text

log = logging.getLogger(__name__)

META_NAME = "meta.json"
FORMAT_VERSION = 1
DEFAULT_TIMEOUT_S = 48 * 3600  # ranks may wait hours at the final barrier for the slowest shard
KILL_ENV = "DMTTS_SHARD_KILL_AFTER_UNITS"
_TAG = r"run(\d{4,})-rank(\d{5,})-(\d{6,})"
_MARKER_RE = re.compile(rf"^{_TAG}\.jsonl\.gz$")
_INDEX_RE = re.compile(rf"^{_TAG}\.idx\.npy$")
_DATA_RE = re.compile(rf"^[A-Za-z0-9_]+\.({_TAG})\.[A-Za-z0-9.]+$")


# ----------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class ShardContext(RankRoles):
    """This process's place among the ranks of a sharded stage (world_size 1 = plain process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    def owns(self, index: int) -> bool:
        """Whether the item at input position ``index`` belongs to this rank."""
        return index % self.world_size == self.rank

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as dist

            if self.device.startswith("cuda"):
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.is_distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list | None:
        """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, ``None`` on the others."""
        if not self.is_distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def close(self) -> None:
        """Tear the process group down (no-op for one process)."""
        if self.is_distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DmttsError(f"environment variable {name}='{value}' is not an integer (set by torchrun)") from None


def shard_context(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> ShardContext:
    """Detect torchrun (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``), start the process group, pick the device.

    ``device``: ``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``), ``cpu``,
    ``cuda`` or ``cuda:N`` (under torchrun every rank uses ``cuda:LOCAL_RANK``). The backend is
    nccl for CUDA and gloo for CPU.
    """
    import torch

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise DmttsError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world_size}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise DmttsError(f"--device must be auto, cpu, cuda or cuda:N, got '{device}'")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DmttsError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if world_size > 1 or device == "cuda":
            device = f"cuda:{local_rank}" if world_size > 1 else "cuda:0"
        torch.cuda.set_device(torch.device(device))
    ctx = ShardContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        elif dist.get_world_size() != world_size:
            raise DmttsError(f"a process group of size {dist.get_world_size()} exists but WORLD_SIZE={world_size}")
    return ctx


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so ``kill`` (and torchrun stopping the other ranks after
    one failed) commits finished work like Ctrl-C does."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- readers


def read_lhotse_items(path: Path) -> Iterator[Any]:
    """The manifest's items (cuts), lazily."""
    from lhotse import load_manifest_lazy

    yield from load_manifest_lazy(path)


def read_json_lines(path: Path) -> Iterator[dict]:
    """Plain JSON lines (``.jsonl`` or ``.jsonl.gz``) whose objects have an ``"id"``, lazily."""
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _decode_lhotse_line(line: str) -> Any:
    from lhotse.serialization import deserialize_item

    return deserialize_item(json.loads(line))


# Readers of JSON-lines files: ``todo()`` reads their lines itself and decodes only this rank's
# (a rank of 128 parses 1/128 of Libri-Heavy instead of all of it).
_LINE_DECODERS: dict[Callable, Callable[[str], Any]] = {}


def item_id(item: Any) -> str:
    return item["id"] if isinstance(item, dict) else item.id


_LINE_DECODERS[read_lhotse_items] = _decode_lhotse_line
_LINE_DECODERS[read_json_lines] = json.loads


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def _fingerprint(path: Path) -> tuple[str, int]:
    """(sha256 of the file's bytes, number of non-blank lines): identifies the input of a job."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    count = 0
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                count += 1
    return sha.hexdigest(), count


# ----------------------------------------------------------------------------- commit units


@dataclass
class Unit:
    """Items a rank finished since its last commit, plus the data files they were stored in."""

    tag: str
    data_dir: Path
    items: list[tuple[int, str, dict]] = field(default_factory=list)

    def add(self, index: int, cut_id: str, record: dict) -> None:
        self.items.append((int(index), cut_id, record))

    def data_path(self, stem: str, suffix: str) -> Path:
        """``<data_dir>/<stem>.<tag><suffix>``: a data file owned by this unit (e.g. stem ``codes``, suffix ``.h5``)."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", stem) or not re.fullmatch(r"\.[A-Za-z0-9.]+", suffix):
            raise ValueError(f"bad data file stem/suffix: {stem!r} {suffix!r}")
        return self.data_dir / f"{stem}.{self.tag}{suffix}"

    def __len__(self) -> int:
        return len(self.items)


def _is_own_temp(name: str) -> bool:
    """A temporary file of ``atomic_path`` for one of this module's files (never anyone else's)."""
    return name.startswith(".") and ".tmp" in name and (
        re.search(_TAG, name) is not None or name.startswith(f".{META_NAME}."))


def _parse_tag(name: str) -> tuple[int, int, int] | None:
    m = _MARKER_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _tag(run: int, rank: int, seq: int) -> str:
    return f"run{run:04d}-rank{rank:05d}-{seq:06d}"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


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
        sha, count = _fingerprint(self.input_path)
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
        self._remove_uncommitted()
        meta = {"format_version": FORMAT_VERSION, "input": str(self.input_path), "input_sha256": sha,
                "num_items": count, "settings": self.settings, "runs": (meta["runs"] + 1) if meta else 0,
                "last_world_size": self.ctx.world_size}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        committed = [tag for markers in self._committed().values() for tag, _ in markers]
        return {**meta, "committed": committed}

    def _remove_uncommitted(self) -> None:
        committed = {tag for markers in self._committed().values() for tag, _ in markers}
        for d in {self.work_dir, self.data_dir}:
            for p in d.iterdir():
                if _is_own_temp(p.name):  # temp file of an interrupted atomic write
                    p.unlink()
                    continue
                m = _INDEX_RE.match(p.name)
                tag = _tag(*map(int, m.groups())) if m else None
                if tag is None:
                    m = _DATA_RE.match(p.name)
                    tag = m.group(1) if m else None
                if tag is not None and tag not in committed:
                    log.info("discarding %s (its unit never committed)", p)
                    p.unlink()

    def clear(self) -> None:
        """Delete this job's own files (markers, indexes, unit data files, meta), nothing else."""
        from lhotse.features.io import close_cached_file_handles

        close_cached_file_handles()  # lhotse caches open HDF5 handles by path
        for d in {self.work_dir, self.data_dir}:
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if (_MARKER_RE.match(p.name) or _INDEX_RE.match(p.name) or _DATA_RE.match(p.name)
                        or _is_own_temp(p.name)):
                    p.unlink()
        (self.work_dir / META_NAME).unlink(missing_ok=True)

    def _committed(self) -> dict[tuple[int, int], list[tuple[str, Path]]]:
        """``{(run, rank): [(tag, marker path), ...] in commit order}`` for every committed unit."""
        names = {f"{tag}.jsonl.gz" for tag in self._reported_tags}
        if self.work_dir.is_dir():
            names.update(p.name for p in self.work_dir.iterdir())
        streams: dict[tuple[int, int], list[tuple[int, str, Path]]] = {}
        for name in names:
            parsed = _parse_tag(name)
            if parsed is not None:
                run, rank, seq = parsed
                streams.setdefault((run, rank), []).append((seq, _tag(run, rank, seq), self.work_dir / name))
        return {k: [(t, p) for _, t, p in sorted(v)] for k, v in sorted(streams.items())}

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
        decode = _LINE_DECODERS.get(self.reader)
        if decode is not None:  # a JSON-lines reader: only this rank's lines are parsed
            with _open_text(self.input_path) as f:
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
        unit = Unit(_tag(self.run, self.ctx.rank, self._seq), self.data_dir)
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
            _fsync(f)
        items = sorted(unit.items, key=lambda t: t[0])
        index = np.array([i for i, _, _ in items], dtype=np.int64)
        if np.any(np.diff(index) <= 0) or not self.owns(int(index[0])) or np.any(self.done[index]):
            raise ValueError(f"unit {unit.tag} holds repeated, foreign or already-done positions")
        with atomic_path(self.work_dir / f"{unit.tag}.idx.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, index)
                f.flush()
                os.fsync(f.fileno())
        with atomic_path(self.work_dir / f"{unit.tag}.jsonl.gz") as tmp:
            with gzip.open(tmp, "wt", encoding="utf-8") as f:
                for i, cut_id, record in items:
                    f.write(json.dumps({"index": i, "id": cut_id, "record": record}, ensure_ascii=False) + "\n")
            _fsync(tmp)
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
        hashes = array.array("Q")  # 8 bytes per cut, not a set of id strings
        for item in self._merge_streams():
            hashes.append(_id_hash(item[1]))
            yield item
        self._check_unique_ids(np.frombuffer(hashes, dtype=np.uint64) if hashes else np.zeros(0, np.uint64))

    def _merge_streams(self) -> Iterator[tuple[int, str, dict]]:
        """k-way merge of the (run, rank) streams; each stream's units are in increasing position order."""
        streams = self._committed()
        _raise_open_file_limit(len(streams) + 64)
        iters = [_read_markers([p for _, p in markers]) for markers in streams.values()]
        last = -1
        for item in heapq.merge(*iters, key=lambda t: t[0]):
            if item[0] != last and item[0] < self.num_items:
                last = item[0]
                yield item

    def _check_unique_ids(self, hashes: np.ndarray) -> None:
        values, counts = np.unique(hashes, return_counts=True)
        repeated = set(values[counts > 1].tolist())
        if not repeated:
            return
        seen: set[str] = set()
        dup = set()
        for _, cut_id, _ in self._merge_streams():
            if _id_hash(cut_id) in repeated:
                if cut_id in seen:
                    dup.add(cut_id)
                seen.add(cut_id)
        if dup:  # (a 64-bit hash collision between different ids is not a duplicate)
            raise DmttsError(f"{self.input_flag} '{self.input_path}' has repeated cut ids "
                             f"({', '.join(sorted(dup)[:5])}): cut ids must be unique")

    def write_merged(self, path: str | Path, transform: Callable[[dict], dict | None] | None = None) -> int:
        """Write every merged record (optionally transformed; None drops it) as JSON lines to ``path``
        (gzip for ``.gz``), atomically. Returns the number of lines."""
        from lhotse.serialization import SequentialJsonlWriter

        n = 0
        with atomic_path(path) as tmp:
            with SequentialJsonlWriter(tmp) as writer:
                for _, _, record in self.merged():
                    record = transform(record) if transform is not None else record
                    if record is not None:
                        writer.write(record)
                        n += 1
        return n


def _read_markers(paths: list[Path]) -> Iterator[tuple[int, str, dict]]:
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                yield rec["index"], rec["id"], rec["record"]


def _id_hash(cut_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(cut_id.encode(), digest_size=8).digest(), "little")


def _raise_open_file_limit(need: int) -> None:
    """The merge keeps one file open per (run, rank); many resumed runs x many ranks may need more
    than the default soft limit of 1024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need,
                                                        hard))
    except (ImportError, ValueError, OSError):
        pass

