"""Loaders: a DataLoader with the worker settings decord / zarr need, and a video loader whose
clips each decode under a deadline."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sfa_cache.data.batches import collate_skip_failed
from sfa_cache.data.decode_pool import DecodePool, JobFailure


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


def video_loader(dataset: Dataset, sampler: Sampler, *, batch_size: int, num_workers: int, decode_timeout: float,
                 device: torch.device, collate_fn: Callable[[list[Any]], Any] = collate_skip_failed) -> Iterable[Any]:
    """Batches of decoded clips: a `TimedLoader` when `decode_timeout` > 0 (every clip under a
    deadline), else a persistent `make_loader` DataLoader."""
    if decode_timeout > 0 and num_workers > 0:
        return TimedLoader(dataset, sampler, batch_size=batch_size, workers=num_workers, timeout=decode_timeout,
                           collate_fn=collate_fn)
    return make_loader(
        dataset, sampler, batch_size=batch_size, num_workers=num_workers, device=device, collate_fn=collate_fn
    )


class TimedLoader:
    """Batches of decoded clips like a DataLoader, but each clip decodes under a deadline.

    A DataLoader has only a loader-wide timeout, which ends the run; decord can hang forever on
    some broken files (decord#373). Here the items of each epoch go through a `DecodePool`:
    every item runs in a worker process with `timeout` seconds, a worker past it is killed and
    replaced, and the clip is recorded through the dataset's `skip(key, reason)` and dropped
    like any undecodable clip. Batches are collated in the calling process, in sampler order,
    so the batches are those a DataLoader over the same sampler would give.

    `workers=0` decodes inline (no deadline). Workers start per epoch (their start-up is a fork
    of the forkserver with the data modules already imported).
    It measured as fast as the persistent DataLoader for Stage 1 (docs/stage1.md).
    """

    def __init__(self, dataset: Dataset, sampler: Sampler, *, batch_size: int, workers: int,
                 timeout: Optional[float], collate_fn: Callable[[list[Any]], Any] = collate_skip_failed) -> None:
        self.dataset, self.sampler, self.batch_size, self.collate_fn = dataset, sampler, batch_size, collate_fn
        self.pool = DecodePool(functools.partial(_load_item, dataset), workers=workers, timeout=timeout,
                               max_ahead=8 * batch_size, preload=["sfa_cache.data.video_dataset"])

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        keys = list(self.sampler)
        results = self.pool.imap(keys)
        try:
            for start in range(0, len(keys), self.batch_size):
                batch = []
                for key in keys[start : start + self.batch_size]:
                    _, item = next(results)
                    if isinstance(item, JobFailure):  # timed out or took its worker down
                        self.dataset.skip(key, item.reason)
                        item = None
                    batch.append(_from_numpy(item))
                yield self.collate_fn(batch)
        finally:
            results.close()  # the pool's run, or the inline generator of workers=0


def _load_item(dataset: Dataset, key: Any) -> Any:
    """dataset[key] with tensors as numpy arrays, which travel through the worker's pipe by value
    (a tensor would travel as shared memory whose file descriptor the parent fetches from the
    worker over a socket: a round trip per clip)."""
    item = dataset[key]
    return None if item is None else tuple(x.numpy() if isinstance(x, torch.Tensor) else x for x in item)


def _from_numpy(item: Any) -> Any:
    return None if item is None else tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in item)
