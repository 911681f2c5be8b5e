"""How Stage 2 is fed from its caches: decide where the features live, then build the batches.

    auto | gpu | ram | stream  --choose_placement-->  gpu | ram: ResidentBatches (resident.py)
    (placement.py)                                    stream:   StreamingBatches (streaming.py)

Every placement gives the same batches (epochs.py), so the choice changes speed, never results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.feeds.epochs import WindowedEpochSampler
from sfa_cache.cache.feeds.placement import choose_placement
from sfa_cache.cache.feeds.resident import ResidentBatches, load_resident, resident_bytes
from sfa_cache.cache.feeds.shared import Preloaded, store_key
from sfa_cache.cache.feeds.streaming import StreamingBatches
from sfa_cache.runtime import host_available_bytes

log = logging.getLogger("sfa_cache")


@dataclass
class Stage2Feeds:
    train: Iterable
    val: Optional[Iterable]
    placement: str  # one of placement.PLACEMENTS: gpu | ram | stream
    why: str


def make_feeds(train: tuple[CachedFeatureDataset, WindowedEpochSampler],
               val: Optional[tuple[CachedFeatureDataset, WindowedEpochSampler]], *, requested: str, batch_size: int,
               num_workers: int, device: torch.device, step_bytes: int = 0,
               preloaded: Optional[Preloaded] = None) -> Stage2Feeds:
    """Batches for training and validation, from resident copies or streamed shards.

    `requested`: a --cache-in-memory word (placement.REQUESTS). `preloaded`: host copies already
    in shared memory (`shared.share_host_copies`, made by `sfa-cache ablate` for all its
    entries); used instead of reading the caches again, and copied to the GPU when it is chosen.
    """
    parts = [p for p in (train, val) if p is not None]
    preloaded = preloaded or {}
    shared = [preloaded[store_key(ds)] for ds, _ in parts if store_key(ds) in preloaded]
    nbytes = sum(resident_bytes(ds.cache, ds.selection.views_needed()) for ds, _ in parts)
    host_free = host_available_bytes() + sum(s.nbytes for s in shared)  # a shared copy costs nothing more
    placement, why = choose_placement(requested, nbytes, device, step_bytes=step_bytes, host_free=host_free)
    if shared and placement != "stream":
        why += "; the host copy shared by the ablation is used, not the cache files"
    log.info("Stage-2 features: %s (%s)", placement, why)

    def feed(ds: CachedFeatureDataset, sampler: WindowedEpochSampler) -> Iterable:
        if placement == "stream":
            return StreamingBatches(ds, sampler, batch_size=batch_size, num_workers=num_workers, device=device)
        where = device if placement == "gpu" else torch.device("cpu")
        store = preloaded.get(store_key(ds))
        store = store.to(where) if store is not None else load_resident(ds.cache, ds.selection.views_needed(),
                                                                        device=where)
        return ResidentBatches(store, sampler, ds.selection, batch_size=batch_size, device=device)

    return Stage2Feeds(train=feed(*train), val=feed(*val) if val is not None else None, placement=placement, why=why)
