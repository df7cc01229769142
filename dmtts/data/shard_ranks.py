"""The ranks of a sharded offline stage: torchrun detection, the process group, the collectives a
stage needs (barrier, broadcast, gather) and SIGTERM handling.

Without torchrun (or with ``WORLD_SIZE=1``) a stage is one plain process and every collective is
a no-op. See ``dmtts.data.sharding`` for how the stages use this.
"""

from __future__ import annotations

import contextlib
import datetime
import signal
from dataclasses import dataclass
from typing import Any

from dmtts.errors import DmttsError
from dmtts.utils import RankRoles, torchrun_env

DEFAULT_TIMEOUT_S = 48 * 3600  # ranks may wait hours at the final barrier for the slowest shard


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


def shard_context(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> ShardContext:
    """Detect torchrun (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``), start the process group, pick the device.

    ``device``: ``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``), ``cpu``,
    ``cuda`` or ``cuda:N`` (under torchrun every rank uses ``cuda:LOCAL_RANK``). The backend is
    nccl for CUDA and gloo for CPU.
    """
    import torch

    env = torchrun_env()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise DmttsError(f"--device must be auto, cpu, cuda or cuda:N, got '{device}'")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DmttsError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if env.world_size > 1 or device == "cuda":
            device = f"cuda:{env.local_rank}" if env.world_size > 1 else "cuda:0"
        torch.cuda.set_device(torch.device(device))
    ctx = ShardContext(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, device=device)
    if env.world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        elif dist.get_world_size() != env.world_size:
            raise DmttsError(f"a process group of size {dist.get_world_size()} exists but WORLD_SIZE={env.world_size}")
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
