"""Commit units of a sharded offline stage and the files they leave in a job's directories.

A unit is the items a rank finished since its last commit. Its tag ``runRRRR-rankKKKKK-SSSSSS``
names everything it owns: data files ``<stem>.<tag><suffix>`` (HDF5 of features / codes) in the
job's ``data_dir``, and in its ``work_dir`` the index ``<tag>.idx.npy`` (input positions) and
the marker ``<tag>.jsonl.gz`` (one ``{"index", "id", "record"}`` line per item). The marker is
written last and atomically: a unit without one never committed and its files are leftovers.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from dmtts.utils import atomic_path

log = logging.getLogger(__name__)

META_NAME = "meta.json"
_TAG = r"run(\d{4,})-rank(\d{5,})-(\d{6,})"
_MARKER_RE = re.compile(rf"^{_TAG}\.jsonl\.gz$")
_INDEX_RE = re.compile(rf"^{_TAG}\.idx\.npy$")
_DATA_RE = re.compile(rf"^[A-Za-z0-9_]+\.({_TAG})\.[A-Za-z0-9.]+$")


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


def unit_tag(run: int, rank: int, seq: int) -> str:
    """The tag of a rank's ``seq``-th unit in run ``run``."""
    return f"run{run:04d}-rank{rank:05d}-{seq:06d}"


def _parse_marker(name: str) -> tuple[int, int, int] | None:
    m = _MARKER_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _is_own_temp(name: str) -> bool:
    """A temporary file of ``atomic_path`` for one of a job's files (never anyone else's)."""
    return name.startswith(".") and ".tmp" in name and (
        re.search(_TAG, name) is not None or name.startswith(f".{META_NAME}."))


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_unit(work_dir: Path, tag: str, items: list[tuple[int, str, dict]]) -> np.ndarray:
    """Write a unit's index, then its marker (the commit), each atomically and fsynced.

    ``items`` are sorted by position already. Returns the positions.
    """
    index = np.array([i for i, _, _ in items], dtype=np.int64)
    with atomic_path(work_dir / f"{tag}.idx.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, index)
            f.flush()
            os.fsync(f.fileno())
    with atomic_path(work_dir / f"{tag}.jsonl.gz") as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for i, cut_id, record in items:
                f.write(json.dumps({"index": i, "id": cut_id, "record": record}, ensure_ascii=False) + "\n")
        fsync_file(tmp)
    return index


def committed_units(work_dir: Path, reported_tags: Iterable[str] = ()) -> dict[tuple[int, int], list[tuple[str, Path]]]:
    """``{(run, rank): [(tag, marker path), ...] in commit order}`` for every committed unit.

    ``reported_tags``: units the ranks said they committed, counted even when a directory listing
    (which may lag on a network filesystem) does not show them yet.
    """
    names = {f"{tag}.jsonl.gz" for tag in reported_tags}
    if work_dir.is_dir():
        names.update(p.name for p in work_dir.iterdir())
    streams: dict[tuple[int, int], list[tuple[int, str, Path]]] = {}
    for name in names:
        parsed = _parse_marker(name)
        if parsed is not None:
            run, rank, seq = parsed
            streams.setdefault((run, rank), []).append((seq, unit_tag(run, rank, seq), work_dir / name))
    return {k: [(t, p) for _, t, p in sorted(v)] for k, v in sorted(streams.items())}


def committed_tags(work_dir: Path) -> list[str]:
    """The tags of every committed unit in ``work_dir``, per (run, rank) in commit order."""
    return [tag for markers in committed_units(work_dir).values() for tag, _ in markers]


def remove_uncommitted(work_dir: Path, data_dir: Path) -> None:
    """Delete the index and data files of units that never committed, and interrupted temp files."""
    committed = set(committed_tags(work_dir))
    for d in {work_dir, data_dir}:
        for p in d.iterdir():
            if _is_own_temp(p.name):  # temp file of an interrupted atomic write
                p.unlink()
                continue
            m = _INDEX_RE.match(p.name)
            tag = unit_tag(*map(int, m.groups())) if m else None
            if tag is None:
                m = _DATA_RE.match(p.name)
                tag = m.group(1) if m else None
            if tag is not None and tag not in committed:
                log.info("discarding %s (its unit never committed)", p)
                p.unlink()


def remove_job_files(work_dir: Path, data_dir: Path) -> None:
    """Delete a job's own files (markers, indexes, unit data files, temp files, meta), nothing else."""
    for d in {work_dir, data_dir}:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if (_MARKER_RE.match(p.name) or _INDEX_RE.match(p.name) or _DATA_RE.match(p.name)
                    or _is_own_temp(p.name)):
                p.unlink()
    (work_dir / META_NAME).unlink(missing_ok=True)
