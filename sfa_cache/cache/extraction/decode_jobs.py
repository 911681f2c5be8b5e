"""What one cached clip is: a job for a decode worker, and the views it makes.

Runs inside decode worker processes, so it imports nothing heavy at module level beyond torch.

Workers ship the views as uint8, before normalisation: a quarter of the bytes of float32 frames
through the pool's shared memory, and the normalisation they skip is a few cheap elementwise
operations where the model runs (`ShardExtractor.encode`, with `normalise_uint8`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from sfa_cache.video.clips import ClipSpec, make_views
from sfa_cache.video.locations import VideoLocation
from sfa_cache.video.transforms import AugmentConfig

if TYPE_CHECKING:
    from sfa_cache.cache.format.index import CacheIndex


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


def clip_spec_of(index: CacheIndex) -> ClipSpec:
    """How the cache's views were made, rebuilt from its index (what `describe_job` recorded)."""
    views, train = index.extraction.views, index.extraction.views.mode == "train"
    return ClipSpec(
        frames=index.frames, image_size=index.spatial.image_size, mean=tuple(index.spatial.mean),
        std=tuple(index.spatial.std), train=train, backend=index.extraction.decoder,
        augment=AugmentConfig(**(views.augment or {})) if train else AugmentConfig(),
        views=views.count if train else 1, crops=1 if train else (views.crops or 1),
    )


def view_decoder_of(index: CacheIndex) -> Callable[[ClipJob], tuple[torch.Tensor, np.ndarray]]:
    """The decode function the cache's frames went through (its recorded transport)."""
    return decode_views if index.extraction.transport == "uint8" else decode_float_views
