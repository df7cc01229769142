"""Small helpers shared across the toolkit: atomic writes and path checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from dmtts.errors import DmttsError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file, and a crash or Ctrl-C leaves the old file intact.
    The temporary name keeps the final suffix(es) so libraries that sniff extensions
    (lhotse's ``.jsonl.gz``) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def require_dir(path: str | Path, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing directory."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{what} '{path}' does not exist or is not a directory"
        raise DmttsError(f"{msg}: {hint}" if hint else msg)
    return path


def require_file(path: str | Path, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        msg = f"{what} '{path}' does not exist or is not a file"
        raise DmttsError(f"{msg}: {hint}" if hint else msg)
    return path


STORAGE_DTYPES = ("float32", "float16")


def storage_state(state: dict, dtype: str = "float32") -> dict:
    """A state dict as stored in an exported ``model.safetensors``.

    ``float16`` halves the file: floating tensors are stored in half precision and loaded back
    into the float32 model (``load_state_dict`` casts). Tensors whose values do not fit half
    precision (beyond ±60000, e.g. EMA sums) stay float32.
    """
    import torch

    if dtype not in STORAGE_DTYPES:
        raise DmttsError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, got '{dtype}'")
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if dtype == "float16" and v.is_floating_point() and (v.numel() == 0 or float(v.abs().max()) < 6e4):
            v = v.to(torch.float16)
        out[k] = v.contiguous()
    return out


class RankRoles:
    """``is_main`` / ``is_distributed`` for anything with ``rank`` and ``world_size`` attributes
    (training's DDP set-up and the sharded offline stages)."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1
