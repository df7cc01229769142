"""The input of a sharded offline stage: JSON-lines manifests read lazily, each rank parsing only
its own lines, and the fingerprint that ties a job's results to one version of its input."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator


def read_lhotse_items(path: Path) -> Iterator[Any]:
    """The manifest's items (cuts), lazily."""
    from lhotse import load_manifest_lazy

    yield from load_manifest_lazy(path)


def read_json_lines(path: Path) -> Iterator[dict]:
    """Plain JSON lines (``.jsonl`` or ``.jsonl.gz``) whose objects have an ``"id"``, lazily."""
    with open_text(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _decode_lhotse_line(line: str) -> Any:
    from lhotse.serialization import deserialize_item

    return deserialize_item(json.loads(line))


# Readers of JSON-lines files: a job reads their lines itself and decodes only this rank's
# (a rank of 128 parses 1/128 of Libri-Heavy instead of all of it).
LINE_DECODERS: dict[Callable, Callable[[str], Any]] = {
    read_lhotse_items: _decode_lhotse_line,
    read_json_lines: json.loads,
}


def item_id(item: Any) -> str:
    """The id of an input item: a cut's ``id`` or a JSON object's ``"id"``."""
    return item["id"] if isinstance(item, dict) else item.id


def open_text(path: Path):
    """``path`` opened for reading text, through gzip for ``.gz``."""
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def fingerprint(path: Path) -> tuple[str, int]:
    """(sha256 of the file's bytes, number of non-blank lines): identifies the input of a job."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    count = 0
    with open_text(path) as f:
        for line in f:
            if line.strip():
                count += 1
    return sha.hexdigest(), count

