"""Per-utterance score cache of ``dmtts eval codec|tts``: a rerun scores only what is missing.

Every per-utterance value (a transcript, a STOI, a similarity, ...) is stored under the key
``(utt_id, "<metric>:<digest>")``, where the digest hashes everything the value depends on:

* the model or library behind the metric (``EvalModels.identity``: name, weights' location,
  version, device);
* the system's audio: the codec's weights (a hash of its state dict), ``n_q``, the batch size and
  unit size (batch padding changes a reconstruction slightly), or a file's path, size and mtime
  for reconstructions / syntheses read from disk;
* the reference: the cut as a dict (recording, offsets, transcript, TTS prompt fields).

WER/WIL are not cached as such: the ASR transcript is, and the text normaliser is applied anew at
every run (so switching ``--text-norm`` costs no ASR). A changed model, codec, file or cut
changes the digest, so a stale value is never reused.

Storage: ``<out_dir>/score_cache/<system>/u<unit>-<digest>.json``, one file per (system, unit
of utterances, key set), each written atomically by the rank that scored the unit, so ranks
never write the same file and a killed run loses at most the unit in progress. Reading a file
back is reading every file of the system.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

from dmtts.utils import atomic_write_text

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "score_cache"
FORMAT_VERSION = 1


def digest(*parts: str, size: int = 20) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:size]


def record_key(metric: str, *identity: str) -> str:
    """``<metric>:<digest of the identity parts>``."""
    return f"{metric}:{digest(*identity)}"


def cut_identity(cut) -> str:
    """A lhotse cut (recording, offsets, supervisions, custom fields) as a digest."""
    return digest(json.dumps(cut.to_dict(), sort_keys=True, default=str))


def file_identity(path: str | Path) -> str:
    """A file's absolute path, size and modification time (ns): a rewritten file is a new file."""
    path = Path(path)
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def module_identity(module) -> str:
    """A digest of a torch module's class, state dict names, dtypes, shapes and bytes."""
    import torch

    h = hashlib.sha1(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


class ScoreCache:
    """``(system, utt_id, key) -> value`` backed by atomically written JSON files.

    ``read=False`` (``--rescore``): start empty, ignoring what earlier runs stored (new values
    are still written).
    """

    def __init__(self, root: str | Path, read: bool = True) -> None:
        self.root = Path(root)
        self.read = read
        self._systems: dict[str, dict[tuple[str, str], Any]] = {}

    def _system_dir(self, system: str) -> Path:
        return self.root / system

    def _load(self, system: str) -> dict[tuple[str, str], Any]:
        if system not in self._systems:
            table: dict[tuple[str, str], Any] = {}
            d = self._system_dir(system)
            if self.read and d.is_dir():
                for path in sorted(d.glob("u*.json")):
                    try:
                        data = json.loads(path.read_text())
                    except (OSError, ValueError) as e:  # cannot happen with atomic writes, but be safe
                        logger.warning("ignoring unreadable score cache file %s (%s)", path, e)
                        continue
                    if data.get("format_version") != FORMAT_VERSION:
                        continue
                    for utt_id, key, value in data["records"]:
                        table[(utt_id, key)] = value
            self._systems[system] = table
        return self._systems[system]

    def reload(self) -> None:
        """Forget what was read, so the next lookup sees files other ranks wrote since."""
        self._systems.clear()
        self.read = True

    def has(self, system: str, utt_id: str, key: str) -> bool:
        return (utt_id, key) in self._load(system)

    def get(self, system: str, utt_id: str, key: str, default: Any = None) -> Any:
        return self._load(system).get((utt_id, key), default)

    def put(self, system: str, unit: int, records: Iterable[tuple[str, str, Any]]) -> Path | None:
        """Store ``(utt_id, key, value)`` records of one unit in one new file (atomic); returns it."""
        records = [(u, k, v) for u, k, v in records]
        if not records:
            return None
        table = self._load(system)
        for u, k, v in records:
            table[(u, k)] = v
        name = f"u{unit:06d}-{digest(*sorted(f'{u}|{k}' for u, k, _ in records), size=12)}.json"
        path = self._system_dir(system) / name
        atomic_write_text(path, json.dumps({"format_version": FORMAT_VERSION, "system": system,
                                            "records": records}, default=_plain) + "\n")
        return path


def _plain(value: Any) -> Any:
    """numpy scalars (a backend may return ``np.float32``) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in the score cache")
