"""Which frames of a video to decode.

The sampler always returns `n` valid indices in [0, num_frames): a video shorter than the
request (even a single frame) yields repeated indices, never an error or an out-of-range seek.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from sfa_cache.errors import SfaError


def _check(num_frames: int, n: int) -> None:
    if n < 1:
        raise SfaError(f"frames must be >= 1, got {n}")
    if num_frames < 1:
        raise SfaError(f"cannot sample from a video with {num_frames} frames")


def uniform_indices(
    num_frames: int, n: int, *, train: bool, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """Segment sampling (TSN / ViViT): split the video into `n` equal segments, take one frame each.

    Training picks a random frame inside each segment (`rng` required); evaluation takes each
    segment's centre, so eval sampling is deterministic. Returns int64 [n], non-decreasing.
    """
    _check(num_frames, n)
    seg = num_frames / n
    if train:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        offsets = rng.random(n)
    else:
        offsets = np.full(n, 0.5)
    idx = np.floor((np.arange(n) + offsets) * seg).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def multi_clip_indices(num_frames: int, n: int, clips: int) -> np.ndarray:
    """`clips` deterministic temporal clips for multi-view testing -> int64 [clips, n].

    Each clip takes one frame per segment, clip k at offset (k + 0.5) / clips inside every
    segment: the clips interleave and together cover the video evenly. `clips=1` is exactly
    `uniform_indices(train=False)`, the centre of each segment.
    """
    _check(num_frames, n)
    if clips < 1:
        raise SfaError(f"clips must be >= 1, got {clips}")
    seg = num_frames / n
    offsets = (np.arange(clips) + 0.5) / clips
    idx = np.floor((np.arange(n)[None, :] + offsets[:, None]) * seg).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)
