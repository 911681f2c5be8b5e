"""A cache's valid clips held in memory as one tensor, and Stage-2 batches gathered from it.

The cache exists so that Stage 2 runs at the cost of the temporal model alone. Read clip by clip
through DataLoader workers, a cache delivers a few percent of what its bytes allow (every item
opens zarr for one clip, reads every view and converts on the CPU). Held resident, a batch is
one `index_select` of [B x T] token rows, on the GPU when the copy fits there, else in host
memory, and stays in the cache's float16 / bfloat16 until it reaches the training device.

Whether a copy is made, and where (`gpu` or `ram`; else the shards are streamed, `streaming.py`),
is `placement.choose_placement`'s decision. The batches are the same in every placement
(`epochs.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from sfa_cache.cache.feeds.epochs import FrameSelection, gather_tokens
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.data.batches import EpochSampler
from sfa_cache.runtime import BAR_INTERVAL, same_device

log = logging.getLogger(__name__)

@dataclass
class ResidentFeatures:
    """The valid clips of one cache, in memory.

    tokens [N, V', F, D] in the cache's dtype, N = the cache's valid clips in cache order (a
    `CachedFeatureDataset`'s items), V' = the cached `views` kept; labels [N] int64 on the same
    device; clips [N] the cache clip id of each row (what the draws are keyed by).
    """

    tokens: torch.Tensor
    labels: torch.Tensor
    clips: np.ndarray
    views: tuple[int, ...]
    source: str

    @property
    def nbytes(self) -> int:
        return self.tokens.numel() * self.tokens.element_size()

    def to(self, device: torch.device) -> ResidentFeatures:
        """A copy on `device` (the same object when it is there already, 'cuda' and 'cuda:0' alike)."""
        if same_device(self.tokens.device, device):
            return self
        return replace(self, tokens=self.tokens.to(device), labels=self.labels.to(device))

    def gather(self, items: np.ndarray, selection: FrameSelection, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B] item indices -> (tokens [B, T, D] in the store's dtype, labels [B]) on the store's device."""
        views, frames = selection.draw(epoch, self.clips[items])
        view_rows = np.searchsorted(self.views, views)  # cached view -> its row in the kept views
        rows = torch.from_numpy(np.asarray(items, dtype=np.int64))
        return gather_tokens(self.tokens, rows, view_rows, frames), self.labels[rows.to(self.labels.device)]


def resident_bytes(cache: FeatureCache, views: tuple[int, ...]) -> int:
    """Bytes a resident copy of `cache`'s valid clips with `views` takes."""
    itemsize = np.dtype(cache.index.dtype).itemsize
    return int(cache.valid.sum()) * len(views) * cache.frames * cache.dim * itemsize


def load_resident(cache: FeatureCache, views: tuple[int, ...], *, device: torch.device, shared: bool = False,
                  progress: bool = True) -> ResidentFeatures:
    """Read the valid clips of `cache` (only `views`) into one tensor on `device`, a whole shard per
    read. `shared`: in shared memory (host only), so processes started afterwards map this copy
    instead of reading the cache again (`sfa-cache ablate`)."""
    if shared and device.type != "cpu":
        raise ValueError("only a host copy can be shared between processes")
    valid = cache.valid
    clips = np.flatnonzero(valid)
    dtype = getattr(torch, cache.index.dtype)
    tokens = torch.empty((len(clips), len(views), cache.frames, cache.dim), dtype=dtype, device=device)
    if shared:
        tokens.share_memory_()
    bar = tqdm(total=len(cache), unit="clip", desc=f"load {cache.dir.name}", disable=not progress,
               mininterval=BAR_INTERVAL, leave=False)
    row = 0
    for s, shard in enumerate(cache.shards):
        block = cache.shard_features(s, views)[valid[shard.start : shard.stop]]  # [valid clips of s, V', F, D]
        tokens[row : row + len(block)].copy_(torch.from_numpy(block))
        row += len(block)
        bar.update(shard.stop - shard.start)
    bar.close()
    labels = torch.from_numpy(cache.labels[clips].astype(np.int64)).to(device)
    if shared:
        labels.share_memory_()
    return ResidentFeatures(tokens=tokens, labels=labels, clips=clips, views=tuple(views), source=str(cache.dir))


def to_training_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A gathered batch onto the training device, float32 only there (half the bytes in transit).

    From host memory to a GPU the (small) batch is pinned first so the copy is asynchronous,
    unless it is pinned already (a slice of a streamed window, which is allocated pinned).
    """
    if x.device.type == "cpu" and device.type == "cuda" and not x.is_pinned():
        x, y = x.pin_memory(), y.pin_memory()
    # .to() is a no-op when the tensor is there already (cuda:0 for a bare "cuda" included)
    return x.to(device, non_blocking=True).float(), y.to(device, non_blocking=True)


class ResidentBatches:
    """Stage-2 batches from a resident copy: yields (tokens [B, T, D] float32, labels [B], 0 dropped)
    on `device`, in the order of `sampler` (an `EpochSampler`; `fit` sets its epoch)."""

    def __init__(self, store: ResidentFeatures, sampler: EpochSampler, selection: FrameSelection, *,
                 batch_size: int, device: torch.device) -> None:
        self.store, self.sampler, self.selection = store, sampler, selection
        self.batch_size, self.device = batch_size, device

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        order, epoch = self.sampler.indices(), self.sampler.epoch
        for start in range(0, len(order), self.batch_size):
            x, y = self.store.gather(order[start : start + self.batch_size], self.selection, epoch)
            yield (*to_training_device(x, y, self.device), 0)
