"""Write one shard of a feature cache: a Zarr v3 group, in one assignment per array.

    features     [clips, views, frames, D]  float16 (or float32), NaN fill
    labels       [clips]                    int64 class index
    clip_index   [clips]                    int64 row in the source manifest
    frame_index  [clips, views, frames]     int32 decoded frame numbers (-1 for failed clips)
    valid        [clips]                    bool, False for clips that failed to decode

`features` uses Zarr's sharding codec: the whole array is one file on disk made of inner chunks
of one clip each, so a shard is a handful of files (not one per clip) while a random read still
touches one clip. Zarr rewrites a shard file whenever any of its chunks is written, so the array
is written exactly once, from a buffer holding all its clips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfa_cache.cache.format.codecs import codec_named


@dataclass
class ShardData:
    """All arrays of one shard, in memory."""

    features: np.ndarray  # [N, V, F, D]
    labels: np.ndarray  # [N] int64
    clip_index: np.ndarray  # [N] int64
    frame_index: np.ndarray  # [N, V, F] int32
    valid: np.ndarray  # [N] bool

    @classmethod
    def empty(cls, clips: int, views: int, frames: int, dim: int, dtype: str) -> "ShardData":
        """Features NaN (never zeros: an unwritten clip must be detectable), frame_index -1."""
        return cls(
            features=np.full((clips, views, frames, dim), np.nan, dtype=dtype),
            labels=np.zeros(clips, dtype=np.int64),
            clip_index=np.zeros(clips, dtype=np.int64),
            frame_index=np.full((clips, views, frames), -1, dtype=np.int32),
            valid=np.zeros(clips, dtype=bool),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "labels": self.labels, "clip_index": self.clip_index,
                "frame_index": self.frame_index, "valid": self.valid}

    def checksum(self) -> str:
        """sha256 over every array's name, dtype, shape and bytes (what `verify` recomputes)."""
        h = hashlib.sha256()
        for name, a in self.arrays().items():
            a = np.ascontiguousarray(a)
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return "sha256:" + h.hexdigest()


def write_shard(path: str | os.PathLike, data: ShardData, compressor: str = "blosc") -> None:
    """Write `data` as a Zarr v3 group at `path`, replacing anything there; the features with the
    chain of `compressor`'s entry in `codecs.CODECS`."""
    import zarr

    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    n, v, f, d = data.features.shape
    features = group.create_array(
        "features", shape=data.features.shape, dtype=data.features.dtype,
        chunks=(1, v, f, d), shards=(max(n, 1), v, f, d),
        compressors=codec_named(compressor).codecs(), fill_value=np.nan,
    )
    features[...] = data.features
    for name in ("labels", "clip_index", "frame_index", "valid"):
        a = data.arrays()[name]
        group.create_array(name, data=a, chunks=a.shape if a.size else "auto")
    _fsync_tree(path)  # on disk before the marker that vouches for it


def _fsync_tree(path: Path) -> None:
    """fsync every file and folder under `path`, and `path`'s parent (power-loss safety)."""
    for root, _, files in os.walk(path):
        for name in files + [""]:  # "" fsyncs the folder itself (its entries)
            fd = os.open(os.path.join(root, name) if name else root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

