"""torch.distributed as launched by torchrun: rank and world size from the environment."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sfa_cache.data.loaders import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """This process's place, from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (single process if unset)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(backend: str = "gloo", timeout_hours: float = 24.0) -> DistInfo:
    """Join the process group when launched with more than one process.

    The long timeout is for barriers that wait while other ranks finish uneven work (extraction
    shards); a rank that dies ends the whole job through torchrun anyway.
    """
    info = dist_info()
    if info.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=timeout_hours))
    return info


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_device(name: str, info: DistInfo) -> torch.device:
    """'auto' -> this rank's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
