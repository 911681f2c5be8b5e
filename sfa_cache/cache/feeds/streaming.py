"""Stage-2 batches streamed from a cache larger than memory: whole shards, read in order.

The epoch's order is `WindowedEpochSampler`'s: shards permuted, cut into windows of `window`
shards, clips permuted inside each window. One DataLoader item is one shard's part of a window:
a worker reads the shard in one sequential read (only the cached views the job uses), gathers
the drawn view and frames of the window's clips that live there and sends back [n, T, D] in the
cache's dtype with their positions in the window. The parent fills the window from its shards'
pieces and cuts the stream of windows into batches of `batch_size` (a batch may span two
windows), so the batches are exactly those a resident copy gives for the same order
(`resident.py`), whatever the number of workers: map-style items come back in sampler order.

Memory: each worker holds one shard while it reads it; the parent holds one window's tokens.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.feeds.epochs import FrameSelection, WindowedEpochSampler
from sfa_cache.cache.feeds.resident import to_training_device
from sfa_cache.cache.format.read import FeatureCache

# (epoch, items that live in one shard, their positions in the window, the window's size)
Piece = tuple[int, np.ndarray, np.ndarray, int]


class ShardPieceReader(Dataset):
    """Worker side: a `Piece` -> (tokens [n, T, D] in the cache's dtype, labels [n] int64,
    positions [n] in the window, window size). The items index the dataset's valid clips and
    all live in one shard."""

    def __init__(self, cache: FeatureCache, clips: np.ndarray, labels: np.ndarray, selection: FrameSelection) -> None:
        self.cache, self.clips, self.labels, self.selection = cache, clips, labels, selection

    def __len__(self) -> int:  # the items are pieces named by the sampler; this is never asked
        return 0

    def __getitem__(self, piece: Piece) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        epoch, items, positions, window_size = piece
        clips = self.clips[items]
        shard = int(self.cache.shard_of(clips[:1])[0])
        views, frames = self.selection.draw(epoch, clips)
        tokens = self.cache.shard_clip_frames(shard, clips - self.cache.shards[shard].start, views, frames)
        return (torch.from_numpy(tokens), torch.from_numpy(self.labels[items].astype(np.int64)),
                torch.from_numpy(positions), window_size)


class ShardPieces(Sampler):
    """This rank's order of the epoch as `Piece`s: window by window, each cut by shard (in shard
    order, so a worker reads each shard once per window)."""

    def __init__(self, sampler: WindowedEpochSampler, shard_of: np.ndarray) -> None:
        self.sampler, self.shard_of = sampler, shard_of

    def pieces(self) -> list[Piece]:
        order, window = self.sampler.rank_order()
        cuts = np.flatnonzero(np.diff(window)) + 1
        out = []
        for items in np.split(order, cuts):
            shards = self.shard_of[items]
            for s in np.unique(shards):
                at = np.flatnonzero(shards == s)
                out.append((self.sampler.epoch, items[at], at, len(items)))
        return out

    def __len__(self) -> int:
        return len(self.pieces())

    def __iter__(self) -> Iterator[Piece]:
        return iter(self.pieces())


class StreamingBatches:
    """Stage-2 batches streamed by `num_workers` processes: yields (tokens [B, T, D] float32,
    labels [B], 0 dropped) on `device`, the batches of `ResidentBatches` for the same sampler."""

    def __init__(self, dataset: CachedFeatureDataset, sampler: WindowedEpochSampler, *, batch_size: int,
                 num_workers: int, device: torch.device, prefetch: int = 2) -> None:
        self.sampler, self.batch_size, self.device = sampler, batch_size, device
        reader = ShardPieceReader(dataset.cache, dataset.clips, dataset.labels, dataset.selection)
        workers = max(0, num_workers)
        self.loader = DataLoader(
            reader, sampler=ShardPieces(sampler, dataset.shard_of), batch_size=None, num_workers=workers,
            # Not pinned per piece: each piece is copied once into its window, and the window is
            # allocated pinned (`windows`), so a batch crosses to the GPU with one pinned copy.
            pin_memory=False, persistent_workers=workers > 0,
            # forkserver, not fork: zarr holds threads that do not survive a fork (data/loaders.py)
            multiprocessing_context="forkserver" if workers > 0 else None,
            prefetch_factor=prefetch if workers > 0 else None,
        )

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def windows(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(tokens [n, T, D], labels [n]) of each window in order, filled from its shards' pieces
        (in pinned memory when training on a GPU)."""
        x = y = None
        filled = 0
        pin = self.device.type == "cuda"
        for tokens, labels, positions, size in self.loader:
            if x is None:
                x = torch.empty((size, *tokens.shape[1:]), dtype=tokens.dtype, pin_memory=pin)
                y = torch.empty(size, dtype=labels.dtype, pin_memory=pin)
            x.index_copy_(0, positions, tokens), y.index_copy_(0, positions, labels)
            filled += len(positions)
            if filled == size:
                yield x, y
                x = y = None
                filled = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        carry: tuple[torch.Tensor, torch.Tensor] | None = None  # a window's tail, short of a batch
        for x, y in self.windows():
            if carry is not None:
                x, y = torch.cat([carry[0], x]), torch.cat([carry[1], y])
            full = len(y) - len(y) % self.batch_size
            for start in range(0, full, self.batch_size):
                stop = start + self.batch_size
                yield (*to_training_device(x[start:stop], y[start:stop], self.device), 0)
            carry = (x[full:], y[full:]) if full < len(y) else None
        if carry is not None:
            yield (*to_training_device(*carry, self.device), 0)
