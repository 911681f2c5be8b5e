"""torch.distributed as launched by torchrun: rank and world size from the environment."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sfa_cache.errors import SfaError
from sfa_cache.runtime import resolve_device


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
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


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
    """This rank's device: 'auto' is the GPU when CUDA is available, else the CPU.

    Under torchrun with several processes, 'auto' and 'cuda' mean this rank's own GPU
    (cuda:LOCAL_RANK); an explicit 'cuda:N' would put every rank on one GPU and is refused.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if info.world_size > 1 and name.startswith("cuda"):
        if name != "cuda":
            raise SfaError(
                f"--device {name} would put every rank on the same GPU; use --device cuda or auto under torchrun"
            )
        name = f"cuda:{info.local_rank}"
    device = resolve_device(name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # NCCL and default allocations follow this rank's GPU
    return device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum each value over the ranks (unchanged in a single process). Float64 keeps counts exact."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def start_processes(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join torchrun's process group (NCCL for GPUs, gloo on the CPU) and pick this rank's device."""
    cuda = device_name != "cpu" and torch.cuda.is_available()
    info = init_distributed("nccl" if cuda else "gloo")
    return info, rank_device(device_name, info)
