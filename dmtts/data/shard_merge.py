"""The merge of a sharded offline stage: every committed unit, in input order, as one stream.

Each (run, rank) wrote its units in increasing position order, so the merge is a streaming
k-way merge with one open file per (run, rank). A position committed twice (by runs of
different world sizes) is kept once; a cut id at two positions is an error of the input.
"""

from __future__ import annotations

import array
import gzip
import hashlib
import heapq
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from dmtts.errors import DmttsError
from dmtts.utils import atomic_path


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


def merge_streams(streams: Iterable[list[Path]], num_items: int) -> Iterator[tuple[int, str, dict]]:
    """k-way merge of the (run, rank) streams (each a list of marker files in commit order):
    ``(index, id, record)`` in input order, a repeated position once, positions past
    ``num_items`` dropped."""
    streams = list(streams)
    _raise_open_file_limit(len(streams) + 64)
    last = -1
    for item in heapq.merge(*(_read_markers(paths) for paths in streams), key=lambda t: t[0]):
        if item[0] != last and item[0] < num_items:
            last = item[0]
            yield item


def merged_unique(merge: Callable[[], Iterator[tuple[int, str, dict]]], input_flag: str, input_path: Path
                  ) -> Iterator[tuple[int, str, dict]]:
    """``merge()``'s items, then a ``DmttsError`` (at the end) if a cut id stood at two positions.

    Ids are remembered as 8-byte hashes, not strings; only when hashes repeat does a second pass
    of ``merge()`` compare the ids themselves (a hash collision is not a duplicate).
    """
    hashes = array.array("Q")
    for item in merge():
        hashes.append(_id_hash(item[1]))
        yield item
    values, counts = np.unique(np.frombuffer(hashes, dtype=np.uint64) if hashes else np.zeros(0, np.uint64),
                               return_counts=True)
    repeated = set(values[counts > 1].tolist())
    if not repeated:
        return
    seen: set[str] = set()
    dup = set()
    for _, cut_id, _ in merge():
        if _id_hash(cut_id) in repeated:
            if cut_id in seen:
                dup.add(cut_id)
            seen.add(cut_id)
    if dup:
        raise DmttsError(f"{input_flag} '{input_path}' has repeated cut ids "
                         f"({', '.join(sorted(dup)[:5])}): cut ids must be unique")


def write_records(path: str | Path, items: Iterable[tuple[int, str, dict]],
                  transform: Callable[[dict], dict | None] | None = None) -> int:
    """Write the records of ``items`` (optionally transformed; None drops one) as JSON lines to
    ``path`` (gzip for ``.gz``), atomically. Returns the number of lines."""
    from lhotse.serialization import SequentialJsonlWriter

    n = 0
    with atomic_path(path) as tmp:
        with SequentialJsonlWriter(tmp) as writer:
            for _, _, record in items:
                record = transform(record) if transform is not None else record
                if record is not None:
                    writer.write(record)
                    n += 1
    return n
