"""Map-style dataset of decoded, transformed clips for end-to-end training (Stage 1, baselines)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler, default_collate

from sfa_cache.data.failures import record_failure
from sfa_cache.data.manifest import Manifest
from sfa_cache.errors import VideoReadError
from sfa_cache.video.reader import open_video, read_index_sets
from sfa_cache.video.sampling import multi_clip_indices, uniform_indices
from sfa_cache.video.transforms import AugmentConfig, eval_crops, eval_transform, train_transform

log = logging.getLogger(__name__)


@dataclass
class ClipSpec:
    """How a clip is made from a video."""

    frames: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool
    backend: str = "decord"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class VideoClipDataset(torch.utils.data.Dataset):
    """Items are keyed `(epoch, index)` (see `EpochSampler`) -> (clip [T, 3, S, S], label) or None.

    All randomness of an item (frame offsets, crop, flip, jitter) comes from a generator seeded
    by (seed, epoch, index): the same item is identical whatever the worker count or order, and a
    resumed run sees exactly the clips an uninterrupted one would. A video that cannot be read
    returns None (dropped by `collate_skip_failed`) and is appended to `failure_log`.
    """

    def __init__(self, manifest: Manifest, spec: ClipSpec, seed: int = 0, failure_log: Optional[str | os.PathLike] = None) -> None:
        self.manifest = manifest
        self.spec = spec
        self.seed = seed
        self.failure_log = failure_log

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int] | int) -> Optional[tuple[torch.Tensor, int]]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        entry = self.manifest.entries[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        s = self.spec
        try:
            reader = open_video(entry.path, s.backend)
            frames = reader.get_frames(uniform_indices(reader.num_frames, s.frames, train=s.train, rng=rng))
        except VideoReadError as e:
            self.skip(key, e.reason)
            return None
        if s.train:
            clip = train_transform(frames, s.image_size, s.mean, s.std, rng, s.augment)
        else:
            clip = eval_transform(frames, s.image_size, s.mean, s.std)
        return clip, entry.label

    def skip(self, key: tuple[int, int] | int, reason: str) -> None:
        """Log and record the clip of `key` as failed (also called by `TimedLoader` on a timeout)."""
        _skip(self.manifest, key, reason, self.failure_log)


def _skip(manifest: Manifest, key: tuple[int, int] | int, reason: str, failure_log: Optional[str | os.PathLike]) -> None:
    entry = manifest.entries[key[1] if isinstance(key, tuple) else key]
    log.warning("skipping %s: %s", entry.path, reason)
    record_failure(failure_log, path=str(entry.path), reason=reason, row=entry.row)


@dataclass
class MultiViewSpec:
    """Multi-view testing (ViViT): `clips` temporal clips x `crops` spatial crops per video."""

    frames: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clips: int = 1
    crops: int = 1
    backend: str = "decord"


def multi_view_clip(path: str | os.PathLike, spec: MultiViewSpec) -> torch.Tensor:
    """-> [clips * crops, F, 3, S, S] (clip-major). Each frame is decoded once. Raises VideoReadError.

    `clips=1, crops=1` is exactly the evaluation view of `VideoClipDataset` and of an eval cache.
    """
    reader = open_video(path, spec.backend)
    idx = multi_clip_indices(reader.num_frames, spec.frames, spec.clips)  # [clips, F]
    views = [eval_crops(frames, spec.image_size, spec.mean, spec.std, spec.crops)
             for frames, _ in read_index_sets(reader, list(idx))]
    return torch.cat(views)


class MultiViewClipDataset(torch.utils.data.Dataset):
    """index -> (views [V, F, 3, S, S], label, index) for evaluation, or None for an unreadable video."""

    def __init__(self, manifest: Manifest, spec: MultiViewSpec, failure_log: Optional[str | os.PathLike] = None) -> None:
        self.manifest = manifest
        self.spec = spec
        self.failure_log = failure_log

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int] | int) -> Optional[tuple[torch.Tensor, int, int]]:
        index = key[1] if isinstance(key, tuple) else key
        entry = self.manifest.entries[index]
        try:
            return multi_view_clip(entry.path, self.spec), entry.label, index
        except VideoReadError as e:
            self.skip(key, e.reason)
            return None

    def skip(self, key: tuple[int, int] | int, reason: str) -> None:
        """Log and record the video of `key` as failed (also called by `TimedLoader` on a timeout)."""
        _skip(self.manifest, key, reason, self.failure_log)


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

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 0x5A]).permutation(self.size)
        else:
            order = np.arange(self.size)
        if self.pad and self.size % self.world_size:
            order = np.resize(order, len(self) * self.world_size)  # wraps round
        return iter((self.epoch, int(i)) for i in order[self.rank :: self.world_size])
