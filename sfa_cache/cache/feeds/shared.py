"""Resident copies made once and shared by several Stage-2 runs (`sfa-cache ablate`).

A parent that starts many trainings over the same caches loads each (cache, views) once into
shared host memory (`share_host_copies`); every child maps that copy instead of reading the files
again, and copies it to its GPU when the GPU is chosen (`stage2.make_feeds` looks a dataset's copy
up by `store_key`). The key and the views a dataset needs are computed here and nowhere else, so
the parent's copies are always the ones the children look for.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from sfa_cache.cache.feeds.dataset import CachedFeatureDataset, frame_selection
from sfa_cache.cache.feeds.placement import canonical_request, fits_in_host
from sfa_cache.cache.feeds.resident import ResidentFeatures, load_resident, resident_bytes
from sfa_cache.cache.format.read import FeatureCache

log = logging.getLogger("sfa_cache")

StoreKey = tuple[str, tuple[int, ...]]  # (the cache folder, resolved; the cached views kept)
Preloaded = dict[StoreKey, ResidentFeatures]  # shared host copies, by the key of what they hold


@dataclass(frozen=True)
class CacheUse:
    """One Stage-2 dataset a run will read: its cache, the frames per clip it takes, whether it
    trains on it (all cached views) or evaluates (the centre view), and the run's
    --cache-in-memory request (a run that streams never maps a copy)."""

    cache: str | os.PathLike
    frames: int
    train: bool
    requested: str = "auto"


def _key(cache_dir: str | os.PathLike, views: tuple[int, ...]) -> StoreKey:
    return str(Path(cache_dir).resolve()), tuple(views)


def store_key(dataset: CachedFeatureDataset) -> StoreKey:
    """What a resident copy for `dataset` is looked up by: its cache folder and the views it needs."""
    return _key(dataset.cache.dir, dataset.selection.views_needed())


def share_host_copies(uses: Iterable[CacheUse]) -> Preloaded:
    """One host copy in shared memory of every (cache, views) the `uses` read, when they all fit
    in host memory (`placement.fits_in_host`); {} when every use streams or they do not fit.

    Each cache is opened once, however many uses share it; tensors in shared memory travel to
    child processes as handles, not bytes.
    """
    opened: dict[str, FeatureCache] = {}
    wanted: dict[StoreKey, FeatureCache] = {}
    for use in uses:
        if canonical_request(use.requested) == "stream":
            continue
        folder = str(Path(use.cache).resolve())
        if folder not in opened:
            opened[folder] = FeatureCache(folder)
        views = frame_selection(opened[folder], use.frames, train=use.train).views_needed()
        wanted.setdefault(_key(folder, views), opened[folder])
    nbytes = sum(resident_bytes(cache, views) for (_, views), cache in wanted.items())
    if not wanted or not fits_in_host(nbytes):
        if wanted:
            log.info("the grid's caches (%.2f GiB) do not fit in host memory: each entry reads its own", nbytes / 2**30)
        return {}
    log.info("loading %d cache cop%s (%.2f GiB) into shared memory for every entry", len(wanted),
             "y" if len(wanted) == 1 else "ies", nbytes / 2**30)
    return {key: load_resident(cache, key[1], device=torch.device("cpu"), shared=True)
            for key, cache in wanted.items()}
