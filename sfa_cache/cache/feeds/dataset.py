"""Training and evaluation items from a feature cache, one clip at a time: (tokens [T, D], label).

Each epoch a training item draws one of the V cached views and a temporal subset of the cached
frames (segment sampling with random offsets: temporal jitter); evaluation takes the centre view
and the fixed centre-of-segment subset. The draws are `epochs.FrameSelection`'s, functions of
(seed, epoch, clip): the same as the resident and streaming feeds give (`stage2.py`), so worker
count, resumption and where the features live do not change what is seen.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from sfa_cache.cache.feeds.epochs import FrameSelection
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.errors import SfaError

log = logging.getLogger(__name__)


def check_frames(cache: FeatureCache, frames: int) -> None:
    """Stage 2 takes a subset of the cached frames: never more than were cached."""
    if frames < 1:
        raise SfaError(f"--frames must be >= 1, got {frames}")
    if frames > cache.frames:
        raise SfaError(f"--frames {frames} is more than the {cache.frames} frames per clip in the cache "
                       f"{cache.dir}; extract with --frames >= {frames} or train on fewer")


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Items keyed `(epoch, index)` (see `EpochSampler`) over the cache's *valid* clips, or by a
    plain `index` at the epoch of the last `set_epoch` (0 before any): a plain
    `DataLoader(shuffle=True)` then varies views and offsets per epoch too.

    Clips that failed to decode at extraction (NaN features) are left out up front and counted
    in `skipped`, so batches are always full.
    """

    def __init__(self, cache: FeatureCache, frames: int, *, train: bool, seed: int = 0) -> None:
        check_frames(cache, frames)
        self.cache = cache
        self.frames = frames
        self.train = train
        self.seed = seed
        self.clips = np.flatnonzero(cache.valid)  # dataset index -> cache clip
        self.labels = cache.labels[self.clips]
        self.skipped = len(cache) - len(self.clips)
        if self.skipped:
            log.info("%s: %d of %d clips failed at extraction and are skipped", cache.dir, self.skipped, len(cache))
        if not len(self.clips):
            raise SfaError(f"{cache.dir} holds no valid clip")
        self.selection = frame_selection(cache, frames, train=train, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch plain integer keys draw for. DataLoader workers get a copy of the dataset
        when an epoch's iteration starts (not with `persistent_workers=True`, whose copies keep
        the epoch they started with: use `EpochSampler` there)."""
        self.epoch = epoch

    @property
    def shard_of(self) -> np.ndarray:
        """[len(self)] the shard each item lives in (for `WindowedEpochSampler`)."""
        return self.cache.shard_of(self.clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        """-> (tokens float32 [frames, D], label)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        clip = int(self.clips[index])
        views, frames = self.selection.draw(epoch, np.array([clip]))
        features = self.cache.features(clip)  # [V, F_cached, D]
        tokens = torch.from_numpy(np.ascontiguousarray(features[views[0], frames[0]], dtype=np.float32))
        return tokens, int(self.labels[index])


def frame_selection(cache: FeatureCache, frames: int, *, train: bool, seed: int = 0) -> FrameSelection:
    """The draws of Stage 2 over `cache`. Evaluation takes the centre view: crop 1 of an eval
    cache's 3 crops, otherwise the first view."""
    centre = 1 if cache.index.extraction.views.mode == "eval" and cache.views == 3 else 0
    return FrameSelection(frames=frames, cached_frames=cache.frames, views=cache.views, train=train, seed=seed,
                          eval_view=centre)
