"""What one cached clip is: which frames are decoded and how each view is transformed.

Runs inside decode worker processes, so it imports nothing heavy at module level beyond torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sfa_cache.video.locations import VideoLocation
from sfa_cache.video.reader import open_video, read_index_sets
from sfa_cache.video.sampling import uniform_indices
from sfa_cache.video.transforms import AugmentConfig, eval_crops, train_transform



@dataclass(frozen=True)
class ViewSpec:
    """How the views of every clip are made (recorded in cache.json).

    `train`: `views` augmented views, each with its own segment-sampling offsets, scale-jitter
    crop, flip and colour jitter (Stage 1's training transform), drawn from a generator seeded by
    (seed, manifest row, view): reproducible whatever the worker, shard or rank.
    `eval`: centre-of-segment frames, and the centre crop (`eval_crops=1`) or three crops along the
    long side (`eval_crops=3`), exactly Stage 1's evaluation transform.
    """

    frames: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "train"
    views: int = 1
    eval_crops: int = 1
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def num_views(self) -> int:
        return self.views if self.mode == "train" else self.eval_crops


@dataclass(frozen=True)
class ClipJob:
    """One clip to decode: where it comes from and how its views are made."""

    row: int  # manifest row (seeds the train views)
    path: VideoLocation  # a file, a tar member or an HDF5 dataset
    spec: ViewSpec
    backend: str = "decord"
    dtype: torch.dtype = torch.float32  # transport dtype of the frames


def decode_views(job: ClipJob) -> tuple[torch.Tensor, np.ndarray]:
    """-> (frames [V, F, 3, S, S] normalised, frame_index [V, F] int32). Raises VideoReadError."""
    s = job.spec
    reader = open_video(job.path, job.backend)
    if s.mode == "eval":
        idx = uniform_indices(reader.num_frames, s.frames, train=False)
        clip = eval_crops(reader.get_frames(idx), s.image_size, s.mean, s.std, s.eval_crops)
        decoded = reader.last_indices  # may differ from idx when a stream ends early
        return clip.to(job.dtype), np.broadcast_to(decoded, (s.eval_crops, s.frames)).astype(np.int32)
    rngs = [np.random.default_rng([s.seed, job.row, v]) for v in range(s.views)]
    indices = [uniform_indices(reader.num_frames, s.frames, train=True, rng=rng) for rng in rngs]
    views, actual = [], []
    for (frames, decoded), rng in zip(read_index_sets(reader, indices), rngs):
        views.append(train_transform(frames, s.image_size, s.mean, s.std, rng, s.augment).to(job.dtype))
        actual.append(decoded)  # what was decoded, not only what was asked for
    return torch.stack(views), np.stack(actual).astype(np.int32)
