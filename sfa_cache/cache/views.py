"""What one cached clip is: a job for a decode worker, and the views it makes.

Runs inside decode worker processes, so it imports nothing heavy at module level beyond torch.

Workers ship the views as uint8, before normalisation: a quarter of the bytes of float32 frames
through the pool's shared memory, and the normalisation they skip is a few cheap elementwise
operations where the model runs (`ShardExtractor.encode`, with `normalise_uint8`).
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


def _view_rngs(job: ClipJob) -> list[np.random.Generator]:
    return [np.random.default_rng([job.seed, job.row, v]) for v in range(job.spec.views)] if job.spec.train else []


def decode_views(job: ClipJob) -> tuple[torch.Tensor, np.ndarray]:
    """-> (frames [V, F, 3, S, S] uint8, not normalised; frame_index [V, F] int32).

    Raises VideoReadError.
    """
    views, frame_index = make_views(job.path, job.spec, _view_rngs(job), normalise=False)
    return views, frame_index.astype(np.int32)


def decode_float_views(job: ClipJob) -> tuple[torch.Tensor, np.ndarray]:
    """-> (frames [V, F, 3, S, S] float32 normalised, frame_index [V, F] int32): the transport
    extraction used before uint8, never quantised.

    Extraction does not use it; it is the baseline `benchmarks/extract_throughput.py` measures the
    uint8 transport against (a module-level function here, because workers import it by name).
    """
    views, frame_index = make_views(job.path, job.spec, _view_rngs(job))
    return views, frame_index.astype(np.int32)
