"""How dataset items become batches: the per-epoch sampler every loop uses, and the collate
that drops items which failed to load (a video that would not decode) and counts them."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler, default_collate


def collate_skip_failed(batch: list[Any]) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], int]:
    """Drop failed items: -> (clips [B, T, 3, S, S], labels [B], number dropped).

    When every item failed, clips and labels are None (the loops skip the batch but count it).
    """
    fields, dropped = collate_items_skip_failed(batch)
    if fields is None:
        return None, None, dropped
    clips, labels = fields
    return clips, labels, dropped


def collate_items_skip_failed(batch: list[Any]) -> tuple[Optional[list[torch.Tensor]], int]:
    """Like `collate_skip_failed` for items of any arity: -> (collated fields or None, number dropped)."""
    ok = [item for item in batch if item is not None]
    return (default_collate(ok) if ok else None), len(batch) - len(ok)


class EpochSampler(Sampler):
    """Yields `(epoch, index)` keys; the order is a pure function of (seed, epoch).

    The epoch travels with each key because persistent DataLoader workers hold their own copy of
    the dataset, so setting an epoch on the dataset in the parent would not reach them.

    Under DDP each of `world_size` ranks takes every `world_size`-th key of the one global order
    (rank r: positions r, r + W, ...), so the ranks' batches at a step together hold exactly the
    clips a single process would see in one batch of W times the size. For training (`pad=True`)
    the order is padded by wrapping round to a multiple of W, so every rank runs the same number
    of steps (DDP would hang otherwise); for evaluation (`pad=False`) nothing is repeated and each
    clip is seen exactly once across ranks.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return -(-self.size // self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def rank_share(self, per_position: np.ndarray) -> np.ndarray:
        """This rank's positions of a global per-position array [size]: every `world_size`-th,
        after padding by wrapping round (training) so all ranks get `len(self)`."""
        if self.pad and self.size % self.world_size:
            per_position = np.resize(per_position, len(self) * self.world_size)  # wraps round
        return per_position[self.rank :: self.world_size]

    def indices(self) -> np.ndarray:
        """[len(self)] the dataset indices this rank takes in the current epoch, in order."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 0x5A]).permutation(self.size)
        else:
            order = np.arange(self.size)
        return self.rank_share(order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter((self.epoch, int(i)) for i in self.indices())
