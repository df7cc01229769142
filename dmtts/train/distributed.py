"""DDP set-up for ``torchrun``: gloo on CPU, nccl on GPU.

``torchrun --nproc-per-node N -m dmtts.cli ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; without
them everything runs as a single process and these helpers are no-ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from dmtts.utils import RankRoles, torchrun_env


@dataclass(frozen=True)
class DistInfo(RankRoles):
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; pick this rank's device.

    ``device``: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu" or "cuda".
    """
    env = torchrun_env()
    world_size, rank, local_rank = env.world_size, env.rank, env.local_rank
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks (identity when not distributed)."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_dist():
        dist.broadcast(tensor, src=src)
    return tensor


def barrier() -> None:
    if is_dist():
        dist.barrier()
