"""What each epoch of Stage 2 takes from a feature cache: the order of the clips and, for each
clip, the cached view and the frames it trains on.

Both are pure functions of (seed, epoch, clip), computed for whole batches at once, so the three
ways of feeding Stage 2 (a resident copy on the GPU, one in host RAM, or shards streamed from
disk: `resident.py`, `streaming.py`) give the same batches, whatever the worker count, and a run
resumed at an epoch boundary replays exactly.

The order is a *windowed* shuffle, the one a streaming reader can follow (WebDataset's shard
shuffle + shuffle buffer, mosaicml-streaming's shuffle blocks): each epoch the shards are
permuted, cut into windows of `window` shards, and the clips of each window are permuted. A
window of 0 (or at least the number of shards) is a full shuffle. Every mode uses the same
order, so where the features live never changes what a run learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sfa_cache.data.batches import EpochSampler
from sfa_cache.video.sampling import uniform_indices

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK = (1 << 64) - 1
_ORDER_STREAM = 0x5A  # keeps the order's generators apart from every other seeded stream


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise on uint64 (wrapping arithmetic): a counter-based
    generator, so draw j of clip c needs no state from the draws before it."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def clip_uniforms(seed: int, epoch: int, clips: np.ndarray, count: int) -> np.ndarray:
    """[n] cache clip ids -> [n, count] float64 in [0, 1): draw j of each clip, a pure function of
    (seed, epoch, clip, j)."""
    key = _splitmix(_splitmix(np.array([seed & _MASK], dtype=np.uint64)) ^ np.uint64(epoch & _MASK))
    per_clip = _splitmix(key ^ np.asarray(clips, dtype=np.int64).astype(np.uint64))  # [n]
    counters = np.arange(count, dtype=np.uint64) * _GOLDEN  # [count]
    bits = _splitmix(per_clip[:, None] + counters[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def train_draws(seed: int, epoch: int, clips: np.ndarray, *, views: int, cached_frames: int,
                frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The training view and frames of each clip: [n] clip ids -> (view [n] int64, frames [n, T] int64).

    The frames are segment sampling over the cached ones (`uniform_indices` with random offsets:
    temporal jitter), in order.
    """
    u = clip_uniforms(seed, epoch, clips, 1 + frames)
    view = np.minimum((u[:, 0] * views).astype(np.int64), views - 1)
    seg = cached_frames / frames
    idx = np.floor((np.arange(frames)[None, :] + u[:, 1:]) * seg).astype(np.int64)
    return view, np.clip(idx, 0, cached_frames - 1)


def eval_frames(cached_frames: int, frames: int) -> np.ndarray:
    """[T] the fixed evaluation frames: the centre of each of T segments of the cached frames."""
    return uniform_indices(cached_frames, frames, train=False)


class WindowedEpochSampler(EpochSampler):
    """`EpochSampler` over a cache's items whose shuffle is windowed by shard (module docstring).

    `shard_of`: [items] the shard each item lives in. Under torchrun every rank takes its share
    of the one global order, padded like `EpochSampler` (so all ranks run the same steps).
    """

    def __init__(self, shard_of: np.ndarray, *, window: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad: bool = True) -> None:
        super().__init__(len(shard_of), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, pad=pad)
        if window < 0:
            raise ValueError(f"window must be >= 0 shards, got {window}")
        self.shard_of = np.asarray(shard_of)
        self.window = window

    def global_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(items [size] in this epoch's order, window [size]: the window each position belongs to)."""
        shards = np.unique(self.shard_of)
        if self.shuffle:
            shards = np.random.default_rng([self.seed, self.epoch, _ORDER_STREAM]).permutation(shards)
        width = self.window or len(shards) or 1
        order, window_id = [], []
        for w, start in enumerate(range(0, len(shards), width)):
            members = np.flatnonzero(np.isin(self.shard_of, shards[start : start + width]))
            if self.shuffle:
                members = np.random.default_rng([self.seed, self.epoch, _ORDER_STREAM, w]).permutation(members)
            order.append(members)
            window_id.append(np.full(len(members), w))
        if not order:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(order), np.concatenate(window_id)

    def rank_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(items, window) of this rank's positions: every `world_size`-th of the global order."""
        order, window_id = self.global_order()
        return self.rank_share(order), self.rank_share(window_id)

    def indices(self) -> np.ndarray:
        return self.rank_order()[0]


@dataclass(frozen=True)
class FrameSelection:
    """Which cached view and frames each clip gives Stage 2: training draws a view and jittered
    segment frames per (seed, epoch, clip); evaluation always takes `eval_view` and the segment
    centres."""

    frames: int  # T, taken from
    cached_frames: int  # F per cached view
    views: int  # V cached views per clip
    train: bool
    seed: int = 0
    eval_view: int = 0

    def draw(self, epoch: int, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n] cache clip ids -> (view [n] int64, frames [n, T] int64)."""
        clips = np.asarray(clips)
        if self.train:
            return train_draws(self.seed, epoch, clips, views=self.views, cached_frames=self.cached_frames,
                               frames=self.frames)
        fixed = eval_frames(self.cached_frames, self.frames)
        return np.full(len(clips), self.eval_view, dtype=np.int64), np.tile(fixed, (len(clips), 1))

    def views_needed(self) -> tuple[int, ...]:
        """The cached views a copy of the cache must hold: all for training, one for evaluation."""
        return tuple(range(self.views)) if self.train else (self.eval_view,)


def gather_tokens(tokens: torch.Tensor, rows: np.ndarray, views: np.ndarray, frames: np.ndarray) -> torch.Tensor:
    """Pick frames of views of clips in one `index_select` on `tokens`' device and dtype.

    tokens [N, V, F, D]; rows [n] (into N), views [n] (into V), frames [n, T] -> [n, T, D].
    """
    n_views, n_frames, dim = tokens.shape[1:]
    flat = (torch.as_tensor(rows) * n_views + torch.as_tensor(views))[:, None] * n_frames + torch.as_tensor(frames)
    return tokens.reshape(-1, dim).index_select(0, flat.reshape(-1).to(tokens.device)).view(*frames.shape, dim)


def window_class_coverage(sampler: WindowedEpochSampler, labels: np.ndarray) -> float:
    """The mean fraction of all classes that a window of the current epoch holds (1.0 for a full
    shuffle). Low when the manifest was sorted by class before extraction: then a window, and
    every batch drawn from it, sees only a few classes."""
    order, window = sampler.global_order()
    total = len(np.unique(labels))
    if not total:
        return 1.0
    return float(np.mean([len(np.unique(labels[order[window == w]])) / total for w in np.unique(window)]))
