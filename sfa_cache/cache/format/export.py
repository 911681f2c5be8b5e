"""A finished feature cache -> one HDF5 file, for tools outside this project.

Layout of the file (every array has one row per clip, in the cache's clip order):

    /features     [clips, views, frames, D]  the cache's dtype; NaN rows for clips that failed
    /labels       [clips] int64               index into the `classes` attribute
    /clip_index   [clips] int64               row of the source manifest
    /frame_index  [clips, views, frames] int32  decoded frame number behind each token
    /valid        [clips] bool                False where decoding failed
    attributes: classes (JSON list), fingerprint, views, frames, dim, dtype, manifest (JSON), format

Features are chunked one clip per chunk with gzip (readable by any HDF5 library); the file is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
from tqdm import tqdm

from sfa_cache.atomic import atomic_write
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.errors import SfaError

EXPORT_FORMAT = 1


def export_h5(cache_dir: str | os.PathLike, out: str | os.PathLike, *, compression: Optional[str] = "gzip",
              progress: bool = False) -> dict[str, object]:
    """Write the cache at `cache_dir` to `out` (.h5); returns a small summary."""
    cache = FeatureCache(cache_dir)  # refuses an unfinished cache
    out = Path(out)
    if out.exists():
        raise SfaError(f"{out} exists; choose another file or delete it first")
    n, v, f, d = len(cache), cache.views, cache.frames, cache.dim
    manifest = cache.index.manifest

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            feats = h5.create_dataset("features", shape=(n, v, f, d), dtype=cache.index.dtype, chunks=(1, v, f, d),
                                      compression=compression)
            frame_index = h5.create_dataset("frame_index", shape=(n, v, f), dtype=np.int32)
            # Features one clip at a time: memory stays one clip, whatever the cache size.
            for clip in tqdm(range(n), desc="export", unit="clip", dynamic_ncols=True, disable=not progress):
                feats[clip] = cache.features(clip)
            for s, shard in enumerate(cache.shards):
                frame_index[shard.start : shard.stop] = cache.shard_frame_index(s)
            h5["labels"] = cache.labels.astype(np.int64)
            h5["clip_index"] = cache.clip_index.astype(np.int64)
            h5["valid"] = cache.valid.astype(bool)
            h5.attrs.update(
                {
                    "format": EXPORT_FORMAT,
                    "classes": json.dumps(cache.classes),
                    "fingerprint": cache.fingerprint,
                    "views": v,
                    "frames": f,
                    "dim": d,
                    "dtype": cache.index.dtype,
                    # path, split and digest of the source manifest (its row list can be huge)
                    "manifest": json.dumps({"path": manifest.path, "split": manifest.split, "digest": manifest.digest}),
                }
            )

    atomic_write(out, write)
    return {"out": str(out), "clips": n, "views": v, "frames": f, "dim": d, "bytes": out.stat().st_size}
