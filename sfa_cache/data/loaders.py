"""DataLoader construction with the worker settings decord / zarr need."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sfa_cache.data.video_dataset import collate_skip_failed
from sfa_cache.errors import SfaError


def make_loader(dataset: Dataset, sampler: Sampler, *, batch_size: int, num_workers: int, device: torch.device,
                collate_fn: Callable[[list[Any]], Any] = collate_skip_failed) -> DataLoader:
    """A loader over `(epoch, index)` keys that drops undecodable clips.

    Workers start with `forkserver` (not fork): decord and zarr hold threads and file handles
    that do not survive a fork, and a forked decord can deadlock. Persistent workers pay the
    start-up once per run instead of once per epoch.
    """
    workers = max(0, num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        multiprocessing_context="forkserver" if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; any torch device string otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SfaError(f"device {name!r} asked for but CUDA is not available")
    return device
