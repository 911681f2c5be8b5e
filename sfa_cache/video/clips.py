"""What a clip is: the one description of how a clip's views are made from a video, and the
function that makes them. Stage 1's training and evaluation clips, ViViT's multi-view testing
and the views an extraction caches are all this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from sfa_cache.video.locations import VideoLocation
from sfa_cache.video.reader import open_video, read_index_sets
from sfa_cache.video.sampling import multi_clip_indices, uniform_indices
from sfa_cache.video.transforms import AugmentConfig, eval_crops, train_transform


@dataclass(frozen=True)
class ClipSpec:
    """How the views of a clip are made.

    Training (`train`): `views` augmented views, each from its own generator: random offsets
    inside the `frames` segments, scale-jitter crop, flip, colour jitter (`augment`).
    Evaluation: `clips` temporal clips (clip k at offset (k + 0.5) / clips inside every segment,
    so `clips=1` takes the segment centres) x `crops` spatial crops (the centre, or three along
    the long side); `clips=1, crops=1` is Stage 1's evaluation view and an eval cache's.
    """

    frames: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool = False
    backend: str = "decord"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    views: int = 1  # training: augmented views
    clips: int = 1  # evaluation: temporal clips
    crops: int = 1  # evaluation: spatial crops per clip (1 or 3)

    @property
    def num_views(self) -> int:
        return self.views if self.train else self.clips * self.crops


def make_views(location: VideoLocation | str, spec: ClipSpec, rngs: Sequence[np.random.Generator] = (), *,
               normalise: bool = True) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and transform one clip -> (views [V, F, 3, S, S] float, frame_index [V, F]: the
    frames actually decoded, which differ from the asked ones when a stream ends early).

    Training takes one generator per view (`rngs`); each frame is decoded once whatever the
    views. `normalise=False` gives the views as uint8 [V, F, 3, S, S] before normalisation
    (`normalise_uint8` in `video/transforms.py` finishes them). Raises VideoReadError for a video
    that cannot be read.
    """
    reader = open_video(location, spec.backend)
    if spec.train:
        if len(rngs) != spec.views:
            raise ValueError(f"{spec.views} training view(s) need as many generators, got {len(rngs)}")
        index_sets = [uniform_indices(reader.num_frames, spec.frames, train=True, rng=rng) for rng in rngs]
        views, decoded = [], []
        for (frames, idx), rng in zip(read_index_sets(reader, index_sets), rngs):
            views.append(train_transform(frames, spec.image_size, spec.mean, spec.std, rng, spec.augment,
                                         normalise=normalise))
            decoded.append(idx)
        return torch.stack(views), np.stack(decoded)
    views, decoded = [], []
    for frames, idx in read_index_sets(reader, list(multi_clip_indices(reader.num_frames, spec.frames, spec.clips))):
        # [crops, F, 3, S, S]
        views.append(eval_crops(frames, spec.image_size, spec.mean, spec.std, spec.crops, normalise=normalise))
        decoded.append(np.broadcast_to(idx, (spec.crops, spec.frames)))
    return torch.cat(views), np.concatenate(decoded)
