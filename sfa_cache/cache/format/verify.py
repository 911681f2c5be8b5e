"""`cache info` and `cache verify`: describe a cache, and check it end to end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sfa_cache.cache.format import layout
from sfa_cache.cache.format.index import CacheIndex, ShardEntry, read_cache_index, read_cache_job
from sfa_cache.cache.format.read import read_shard
from sfa_cache.data.manifest import Manifest, manifest_digest
from sfa_cache.errors import SfaError


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cache_info(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Shape, dtype, size, fingerprint and failures of a finished cache; progress of an unfinished one."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / layout.CACHE_FILE).is_file() and (cache_dir / layout.JOB_FILE).is_file():
        job = read_cache_job(cache_dir)
        total = len(layout.plan_shards(len(job.manifest.rows), job.extraction.clips_per_shard))
        done = sum(layout.read_marker(cache_dir, i, job.key) is not None for i in range(total))
        return {"cache": str(cache_dir), "complete": False, "shards_done": done, "shards": total,
                "fingerprint": job.fingerprint, "manifest": job.manifest.path}
    index = read_cache_index(cache_dir)
    size = _disk_bytes(cache_dir)
    return {
        "cache": str(cache_dir),
        "complete": True,
        "clips": index.num_clips,
        "valid": index.valid_clips,
        "failed": index.failed_clips,
        "views": index.views,
        "frames": index.frames,
        "dim": index.dim,
        "dtype": index.dtype,
        "mode": index.extraction.views.mode,
        "compressor": index.extraction.compressor,
        "shards": len(index.shards),
        "bytes": size,
        "bytes_per_clip": round(size / max(1, index.num_clips)),
        "backbone": index.spatial.backbone,
        "image_size": index.spatial.image_size,
        "fingerprint": index.fingerprint,
        "classes": len(index.classes),
        "manifest": index.manifest.path,
        "created_with": index.versions.get("sfa_cache"),
    }


def _shard_problems(cache_dir: Path, index: CacheIndex, s: ShardEntry, rows: list[int]) -> list[str]:
    """What is wrong with shard `s` (its marker, data, checksum, shapes and NaN placement); its
    clips' manifest rows are appended to `rows`."""
    name = f"shard {s.index}"
    marker = layout.read_marker(cache_dir, s.index, index.key)
    if marker is None:
        return [f"{name}: completion marker missing or invalid"]
    try:
        data = read_shard(layout.shard_path(cache_dir, s.index))
    except Exception as e:  # unreadable or corrupt Zarr data
        return [f"{name}: cannot read its data ({type(e).__name__}: {e})"]
    problems: list[str] = []
    n, V, F, D, dtype = s.stop - s.start, index.views, index.frames, index.dim, np.dtype(index.dtype)
    if data.features.shape != (n, V, F, D) or data.features.dtype != dtype:
        problems.append(
            f"{name}: features are {data.features.shape} {data.features.dtype}, expected {(n, V, F, D)} {dtype}"
        )
    if (
        data.labels.shape != (n,)
        or data.valid.shape != (n,)
        or data.clip_index.shape != (n,)
        or data.frame_index.shape != (n, V, F)
    ):
        return problems + [f"{name}: labels / valid / clip_index / frame_index shapes disagree with {n} clips"]
    checksum = data.checksum()
    if checksum != marker["checksum"] or checksum != s.checksum:
        problems.append(f"{name}: checksum mismatch (data changed or corrupted after it was written)")
    flat = data.features.reshape(n, -1)
    nan = np.isnan(flat)
    if (bad := np.flatnonzero(data.valid & ~np.isfinite(flat).all(axis=1))).size:
        problems.append(f"{name}: {bad.size} valid clip(s) hold NaN or inf (first: clip {s.start + int(bad[0])})")
    if (bad := np.flatnonzero(~data.valid & ~nan.all(axis=1))).size:
        problems.append(f"{name}: {bad.size} failed clip(s) hold values (first: clip {s.start + int(bad[0])})")
    if (bad := np.flatnonzero(data.valid & (data.frame_index < 0).any(axis=(1, 2)))).size:
        problems.append(f"{name}: {bad.size} valid clip(s) without decoded frame indices")
    rows.extend(data.clip_index.tolist())
    return problems


def verify_cache(cache_dir: str | os.PathLike, manifest: Optional[Manifest] = None) -> list[str]:
    """Every problem found (empty list: the cache is sound).

    Checks: cache.json present; every shard has its marker with this cache's key; the checksum
    recomputed from the data equals the marker's and cache.json's; array shapes agree with the
    index; valid clips hold no NaN and failed clips hold nothing but NaN; the clips cover the
    manifest rows recorded at extraction exactly once, in order; and, given a `manifest`, that it
    is the one the cache was made from (same rows, labels, classes, paths and file sizes).
    """
    cache_dir = Path(cache_dir)
    try:
        index = read_cache_index(cache_dir)
    except SfaError as e:  # the message says what state the folder is in
        return [str(e)]
    problems: list[str] = []
    rows: list[int] = []
    for s in index.shards:
        problems += _shard_problems(cache_dir, index, s, rows)
    expected = index.manifest.rows
    if not problems and rows != expected:
        problems.append(
            f"the shards hold {len(rows)} clips that do not match the {len(expected)} manifest rows "
            "recorded at extraction"
        )
    if manifest is not None:
        rows_given = [e.row for e in manifest.entries]
        missing = sorted(set(rows_given) - set(expected))
        if rows_given != expected:
            problems.append(f"the cache does not cover the given manifest: {len(missing)} row(s) missing"
                            + (f" (first: row {missing[0]})" if missing else ", or in another order"))
        elif manifest_digest(manifest) != index.manifest.digest:
            problems.append("the given manifest differs from the one the cache was made from "
                            "(labels, classes, video paths or file sizes changed)")
    if index.valid_clips + index.failed_clips != index.num_clips:
        problems.append("cache.json clip counts do not add up")
    return problems
