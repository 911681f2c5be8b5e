"""What one cached clip is: a job for a decode worker, and the views it makes.

Runs inside decode worker processes, so it imports nothing heavy at module level beyond torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sfa_cache.video.clips import ClipSpec, make_views
from sfa_cache.video.locations import VideoLocation


@dataclass(frozen=True)
class ClipJob:
    """One clip to decode: where it comes from and how its views are made.

    The training views of a clip are drawn from generators seeded by (seed, manifest row, view):
    reproducible whatever the worker, shard or rank.
    """

    row: int  # manifest row (seeds the train views)
    path: VideoLocation  # a file, a tar member or an HDF5 dataset
    spec: ClipSpec
    seed: int = 0
    dtype: torch.dtype = torch.float32  # transport dtype of the frames


def decode_views(job: ClipJob) -> tuple[torch.Tensor, np.ndarray]:
    """-> (frames [V, F, 3, S, S] normalised, frame_index [V, F] int32). Raises VideoReadError."""
    rngs = [np.random.default_rng([job.seed, job.row, v]) for v in range(job.spec.views)] if job.spec.train else []
    views, frame_index = make_views(job.path, job.spec, rngs)
    return views.to(job.dtype), frame_index.astype(np.int32)
