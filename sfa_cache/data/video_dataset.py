"""Map-style datasets of decoded, transformed clips: training and evaluation on raw video
(Stage 1, baselines) and multi-view testing (`evaluate`)."""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import torch

from sfa_cache.data.failures import record_failure
from sfa_cache.data.manifest import Manifest
from sfa_cache.errors import VideoReadError
from sfa_cache.video.clips import ClipSpec, make_views

log = logging.getLogger(__name__)


class VideoClipDataset(torch.utils.data.Dataset):
    """Items are keyed `(epoch, index)` (see `EpochSampler`) -> (clip [T, 3, S, S], label) or None.

    All randomness of an item (frame offsets, crop, flip, jitter) comes from a generator seeded
    by (seed, epoch, index): the same item is identical whatever the worker count or order, and a
    resumed run sees exactly the clips an uninterrupted one would. A video that cannot be read
    returns None (dropped by `collate_skip_failed`) and is appended to `failure_log`. `spec`
    makes one view: a training view, or the evaluation centre view.
    """

    def __init__(
        self, manifest: Manifest, spec: ClipSpec, seed: int = 0, failure_log: Optional[str | os.PathLike] = None
    ) -> None:
        if spec.num_views != 1:
            raise ValueError(f"a training / validation clip has one view, the spec makes {spec.num_views}")
        self.manifest = manifest
        self.spec = spec
        self.seed = seed
        self.failure_log = failure_log

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int] | int) -> Optional[tuple[torch.Tensor, int]]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        entry = self.manifest.entries[index]
        rngs = [np.random.default_rng([self.seed, epoch, index])] if self.spec.train else []
        try:
            views, _ = make_views(entry.path, self.spec, rngs)
        except VideoReadError as e:
            self.skip(key, e.reason)
            return None
        return views[0], entry.label

    def skip(self, key: tuple[int, int] | int, reason: str) -> None:
        """Log and record the clip of `key` as failed (also called by `TimedLoader` on a timeout)."""
        _skip(self.manifest, key, reason, self.failure_log)


def _skip(
    manifest: Manifest, key: tuple[int, int] | int, reason: str, failure_log: Optional[str | os.PathLike]
) -> None:
    entry = manifest.entries[key[1] if isinstance(key, tuple) else key]
    log.warning("skipping %s: %s", entry.path, reason)
    record_failure(failure_log, path=str(entry.path), reason=reason, row=entry.row)


class MultiViewClipDataset(torch.utils.data.Dataset):
    """index -> (views [clips * crops, F, 3, S, S], label, index) for evaluation, or None for an
    unreadable video."""

    def __init__(self, manifest: Manifest, spec: ClipSpec, failure_log: Optional[str | os.PathLike] = None) -> None:
        self.manifest = manifest
        self.spec = spec
        self.failure_log = failure_log

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int] | int) -> Optional[tuple[torch.Tensor, int, int]]:
        index = key[1] if isinstance(key, tuple) else key
        entry = self.manifest.entries[index]
        try:
            return make_views(entry.path, self.spec)[0], entry.label, index
        except VideoReadError as e:
            self.skip(key, e.reason)
            return None

    def skip(self, key: tuple[int, int] | int, reason: str) -> None:
        """Log and record the video of `key` as failed (also called by `TimedLoader` on a timeout)."""
        _skip(self.manifest, key, reason, self.failure_log)
