"""Small helpers shared across the toolkit: atomic writes, path checks, storage dtypes, fp32 regions
inside autocast, rank roles and the torchrun environment."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
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


def _require(path: str | Path, what: str, hint: str, exists: bool, kind: str) -> Path:
    """``path`` as a Path if ``exists`` holds for it, else a one-line error naming it and the fix."""
    path = Path(path)
    if not exists:
        msg = f"{what} '{path}' does not exist or is not a {kind}"
        raise DmttsError(f"{msg}: {hint}" if hint else msg)
    return path


def require_dir(path: str | Path, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing directory."""
    return _require(path, what, hint, Path(path).is_dir(), "directory")


def require_file(path: str | Path, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing file."""
    return _require(path, what, hint, Path(path).is_file(), "file")


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



def fp32_region(x):
    """A context in which autocast is off on tensor ``x``'s device: code that must compute in fp32
    also inside a bf16 ``torch.autocast`` region (the RVQ's distances, the harmonic oscillator bank)."""
    import torch

    return torch.autocast(device_type=x.device.type, enabled=False)


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


@dataclass(frozen=True)
class TorchrunEnv(RankRoles):
    """This process's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as torchrun set them."""

    rank: int
    world_size: int
    local_rank: int


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DmttsError(f"environment variable {name}='{value}' is not an integer (set by torchrun)") from None


def torchrun_env() -> TorchrunEnv:
    """The ranks torchrun launched this process with; rank 0 of 1 without torchrun.

    Used by training's DDP set-up and by the sharded offline stages, so both read and check the
    environment the same way.
    """
    env = TorchrunEnv(rank=_env_int("RANK", 0), world_size=_env_int("WORLD_SIZE", 1),
                      local_rank=_env_int("LOCAL_RANK", 0))
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise DmttsError(f"bad torchrun environment: RANK={env.rank} WORLD_SIZE={env.world_size} "
                         f"LOCAL_RANK={env.local_rank}")
    return env
