"""Writing one feature cache, the mosaicml-streaming writer's way: the index is written last.

    builder = CacheBuilder(cache_root, name, job, num_clips=len(manifest), dist=info)
    with builder:                      # claims the folder: reuses, resumes or demotes it
        for shard in builder.todo:     # this rank's shards without a completion marker
            builder.write_shard(shard, data, failures)
    builder.index                      # cache.json, written by finish() on a clean exit

The builder owns the content key and the folder named by it, the per-shard protocol (a lock
held while the shard may be written, leftovers of an interrupted attempt discarded, the data
written in one assignment, then its marker) and `finish()`, which checks every marker and
writes cache.json. Markers are the only truth: a finished cache that lost one is demoted to
unfinished and the shard redone. Under torchrun, rank r of N owns shards r, r+N, ... and rank
0 claims the folder and finishes; the ranks meet only at barriers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

from sfa_cache.atomic import atomic_write_text
from sfa_cache.cache.format import layout
from sfa_cache.cache.format.index import (
    CachedSpatial,
    CacheIndex,
    ExtractionSettings,
    ManifestInfo,
    ShardEntry,
    ViewSettings,
    cache_index_from_json,
    cache_key,
    read_cache_index,
)
from sfa_cache.cache.format.write import ShardData, write_shard
from sfa_cache.data.failures import FAILURES_FILE
from sfa_cache.distributed import DistInfo, barrier
from sfa_cache.errors import SfaError
from sfa_cache.folders import folder_marker
from sfa_cache.models.config import SpatialSource

log = logging.getLogger("sfa_cache")


class CacheBuilder:
    """Builds the cache of `job` (an index without key and shard table) under `cache_root`."""

    def __init__(self, cache_root: str | os.PathLike, name: str, job: CacheIndex, *, num_clips: int,
                 dist: Optional[DistInfo] = None) -> None:
        key = cache_key(job.fingerprint, job.extraction, job.manifest.digest)
        self.job = dataclasses.replace(job, key=key)
        self.dir = Path(cache_root) / f"{name}-{job.extraction.views.mode}-{job.extraction.frames}f-{key[:12]}"
        self.shards = layout.plan_shards(num_clips, job.extraction.clips_per_shard)
        self.dist = dist or DistInfo()  # one process unless told otherwise
        self.reused = False  # a finished cache of the same job was found
        self.todo: list[layout.ShardPlan] = []  # this rank's shards to write
        self.index: Optional[CacheIndex] = None  # cache.json, once finished (rank 0)
        self._locks = contextlib.ExitStack()

    # --- the protocol ------------------------------------------------------------------------
    def __enter__(self) -> CacheBuilder:
        self.open()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._locks.close()
        if exc_type is None and not self.reused:
            self.finish()

    def open(self) -> None:
        """Reuse a finished cache of this job, or claim the folder and find this rank's shards to do."""
        if (self.dir / layout.CACHE_FILE).is_file():
            lost = [s.index for s in self.shards if not self._has_marker(s)]
            if not lost:
                self.index = read_cache_index(self.dir)
                if self.index.key != self.job.key:
                    raise SfaError(
                        f"{self.dir} holds another cache (key mismatch); remove it or choose another --cache-root"
                    )
                self.reused = True
                log.info("reusing the finished cache %s (same fingerprint, settings and manifest)", self.dir)
                return
            barrier()  # every rank has seen the markers before rank 0 demotes the cache
            if self.dist.is_main:  # markers are the truth: the cache is unfinished again
                log.warning("%s: shard(s) %s lost their completion markers; redoing them", self.dir, lost[:8])
                (self.dir / layout.CACHE_FILE).unlink(missing_ok=True)
        if self.dist.is_main:
            self._claim()
        barrier()
        mine = self.shards[self.dist.rank :: self.dist.world_size]
        self.todo = [s for s in mine if not self._has_marker(s)]
        if len(self.todo) < len(mine):
            log.info("resuming %s: %d of %d shards already complete", self.dir, len(mine) - len(self.todo), len(mine))
        elif self.dist.is_main:
            log.info("extracting %d clips x %d view(s) x %d frames into %s", self.shards[-1].stop if self.shards else 0,
                     self.job.views, self.job.frames, self.dir)
        self._locks.enter_context(layout.shard_locks(self.dir, [s.index for s in self.todo]))
        for s in self.todo:
            layout.discard_shard(self.dir, s.index)  # leftovers of an interrupted attempt

    def write_shard(self, shard: layout.ShardPlan, data: ShardData, failures: list[dict[str, Any]]) -> None:
        """The shard's arrays (each in one assignment, fsynced), then its completion marker."""
        write_shard(layout.shard_path(self.dir, shard.index), data, self.job.extraction.compressor)
        layout.write_marker(self.dir, shard.index, {
            "shard": shard.index, "start": shard.start, "stop": shard.stop, "key": self.job.key,
            "clip_rows": data.clip_index.tolist(), "valid": int(data.valid.sum()),
            "checksum": data.checksum(), "failures": failures,
        })

    def finish(self) -> Optional[CacheIndex]:
        """After every rank's shards: check every marker, rewrite failures.jsonl from them and write
        cache.json, last (rank 0; other ranks get None)."""
        barrier()  # every rank's markers are on disk
        if not self.dist.is_main:
            return None
        markers = [layout.read_marker(self.dir, s.index, self.job.key) for s in self.shards]
        missing = [s.index for s, m in zip(self.shards, markers) if m is None]
        if missing:
            raise SfaError(
                f"{self.dir}: shards {missing[:8]} have no completion marker; rerun the same command to finish them"
            )
        failures = [f for m in markers for f in m["failures"]]
        # The live log may hold duplicates from interrupted attempts; the markers are the truth.
        atomic_write_text(self.dir / FAILURES_FILE, "".join(json.dumps(f) + "\n" for f in failures))
        valid = sum(m["valid"] for m in markers)
        if valid == 0:  # a cache of nothing but NaN helps nobody: not marked complete
            first = failures[0] if failures else {}
            raise SfaError(f"no clip of {self.job.manifest.path} could be decoded ({len(failures)} failures; first: "
                           f"{first.get('path')}: {first.get('reason')}); see {self.dir / FAILURES_FILE}")
        num_clips = self.shards[-1].stop if self.shards else 0
        self.index = dataclasses.replace(
            self.job,
            num_clips=num_clips,
            valid_clips=valid,
            failed_clips=num_clips - valid,
            shards=[
                ShardEntry(s.index, s.start, s.stop, m["checksum"], m["valid"]) for s, m in zip(self.shards, markers)
            ],
            completed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.index.write(self.dir)
        log.info("cache complete: %d clips, %d valid, %d failed -> %s", num_clips, valid, num_clips - valid, self.dir)
        return self.index

    # --- helpers -----------------------------------------------------------------------------
    def _has_marker(self, shard: layout.ShardPlan) -> bool:
        return layout.read_marker(self.dir, shard.index, self.job.key) is not None

    def _claim(self) -> None:
        """Create the folder with its job file, or check that the folder's job is this one."""
        found = folder_marker(self.dir, layout.JOB_FILE, what="a cache of this extraction",
                              advice="remove it or choose another --cache-root")
        if found is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.job.write(self.dir)
        elif cache_index_from_json(found, where=str(self.dir / layout.JOB_FILE)).key != self.job.key:
            raise SfaError(f"{self.dir} belongs to another extraction (its {layout.JOB_FILE} has another key)")


def write_features(cache_root: str | os.PathLike, name: str, data: ShardData, *, classes: list[str],
                   clips_per_shard: int = 256, compressor: str = "blosc", source: str = "external") -> Path:
    """A finished cache of features computed elsewhere (another extractor, a benchmark, a test),
    written through the builder like any extraction: shards, markers, cache.json last.

    `data` holds every clip ([clips, views, frames, D] features with labels, validity, rows);
    the spatial model is recorded as `source`, with no preprocessing. Returns the cache folder.
    """
    n, v, f, d = data.features.shape
    dtype = str(data.features.dtype)
    job = CacheIndex(
        fingerprint=f"sha256:{source}", spatial=CachedSpatial(source, 0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        preprocessing={}, source=SpatialSource(backbone=source),
        extraction=ExtractionSettings(frames=f, views=ViewSettings("train", v), dtype=dtype, amp="none", decoder=source,
                                      compressor=compressor, clips_per_shard=clips_per_shard),
        views=v, frames=f, dim=d, dtype=dtype, classes=list(classes),
        manifest=ManifestInfo(path=source, kind=source, rows=data.clip_index.tolist(), digest=data.checksum()),
        versions={},
    )
    with CacheBuilder(cache_root, name, job, num_clips=n) as builder:
        for shard in builder.todo:
            part = ShardData(**{k: a[shard.start : shard.stop] for k, a in data.arrays().items()})
            builder.write_shard(shard, part, [])
    return builder.dir
