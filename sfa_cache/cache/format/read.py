"""Random access to a finished feature cache: global clip index -> [views, frames, D]; and
`read_shard`, every array of one shard at once (the inverse of `write.write_shard`).

Zarr stores are opened lazily, per process, on first access: a `FeatureCache` built in the
parent and sent to DataLoader workers (spawn, forkserver or fork) carries only paths and the
index, and each worker opens its own handles (docs/architecture.md).
"""

from __future__ import annotations

import bisect
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from sfa_cache.cache.format.fast_read import read_clip_frames, read_whole_features
from sfa_cache.cache.format.index import CacheIndex, ShardEntry, read_cache_index
from sfa_cache.cache.format.layout import shard_path
from sfa_cache.cache.format.write import ShardData


class FeatureCache:
    """A finished cache directory (one with cache.json)."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.dir = Path(cache_dir)
        self.index: CacheIndex = read_cache_index(self.dir)
        self.shards: list[ShardEntry] = self.index.shards
        self._starts = [s.start for s in self.shards]
        self._arrays: dict[tuple[int, str], Any] = {}
        self._pid = os.getpid()

    # --- description ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.index.num_clips

    @property
    def views(self) -> int:
        return self.index.views

    @property
    def frames(self) -> int:
        return self.index.frames

    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def classes(self) -> list[str]:
        return list(self.index.classes)

    @property
    def fingerprint(self) -> str:
        return self.index.fingerprint

    # --- per-clip access -----------------------------------------------------------------------
    def locate(self, clip: int) -> tuple[int, int]:
        """Global clip index -> (shard index, row inside the shard)."""
        if not 0 <= clip < len(self):
            raise IndexError(f"clip {clip} out of range for a cache of {len(self)} clips")
        s = bisect.bisect_right(self._starts, clip) - 1
        return s, clip - self._starts[s]

    def features(self, clip: int) -> np.ndarray:
        """[views, frames, D] in the cache's dtype (NaN for a clip that failed to decode)."""
        s, row = self.locate(clip)
        return self._array(s, "features")[row]

    def shard_features(self, s: int, views: tuple[int, ...] | None = None) -> np.ndarray:
        """[clips of shard s, len(views), frames, D]: a whole shard in one read (the way to stream a
        cache: one sequential read instead of one per clip), only the `views` asked for (all by default).

        The shard file is read in one pass by `read_whole_features` (about 2x faster than Zarr's
        per-chunk path, the same checksums), or through Zarr for a layout that reader does not know.
        """
        whole = read_whole_features(shard_path(self.dir, s) / "features")
        if whole is not None:
            return whole if views is None or tuple(views) == tuple(range(self.views)) else whole[:, list(views)]
        array = self._array(s, "features")
        if views is None or tuple(views) == tuple(range(self.views)):
            return array[...]
        if len(views) == 1:
            return array[:, views[0]][:, None]
        return array.get_orthogonal_selection((slice(None), list(views)))

    def shard_clip_frames(self, s: int, rows: np.ndarray, views: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """rows [n] (clips of shard s), views [n], frames [n, T] -> [n, T, D] in the cache's dtype: what
        a training batch takes from a shard, read in one pass without holding the whole shard
        (`read_clip_frames`), or through `shard_features` for a layout that reader does not know."""
        taken = read_clip_frames(shard_path(self.dir, s) / "features", rows, views, frames)
        if taken is not None:
            return taken
        needed = np.unique(views)
        block = self.shard_features(s, tuple(needed.tolist()))
        return block[rows[:, None], np.searchsorted(needed, views)[:, None], frames]

    def shard_of(self, clips: np.ndarray) -> np.ndarray:
        """[n] global clip indices -> [n] the shard each lives in."""
        return np.searchsorted(np.asarray(self._starts), np.asarray(clips), side="right") - 1

    def frame_index(self, clip: int) -> np.ndarray:
        """[views, frames] int32: the decoded frame numbers behind each cached token."""
        s, row = self.locate(clip)
        return self._array(s, "frame_index")[row]

    def shard_frame_index(self, s: int) -> np.ndarray:
        """[clips of shard s, views, frames] int32 in one read (stored as one chunk per shard, so
        reading it clip by clip would decompress the whole shard's array for every clip)."""
        return self._array(s, "frame_index")[...]

    # --- whole-cache columns (small; read once) ------------------------------------------------
    @cached_property
    def labels(self) -> np.ndarray:
        return self._column("labels")

    @cached_property
    def valid(self) -> np.ndarray:
        return self._column("valid")

    @cached_property
    def clip_index(self) -> np.ndarray:
        """[clips] the source manifest row of each clip."""
        return self._column("clip_index")

    def _column(self, name: str) -> np.ndarray:
        return np.concatenate([self._array(s, name)[...] for s in range(len(self.shards))])

    def _array(self, s: int, name: str) -> Any:
        """The open Zarr array `name` of shard `s` (opening reads metadata: done once per process)."""
        if os.getpid() != self._pid:  # inherited through fork: never reuse the parent's handles
            self._arrays, self._pid = {}, os.getpid()
        array = self._arrays.get((s, name))
        if array is None:
            import zarr

            array = self._arrays[(s, name)] = zarr.open_array(str(shard_path(self.dir, s) / name), mode="r")
        return array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # open handles never travel; cached columns (small) do
        return state


def read_shard(path: str | os.PathLike) -> ShardData:
    """Every array of a shard (for verification and tests; training reads clip by clip)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return ShardData(
        **{name: group[name][...] for name in ("features", "labels", "clip_index", "frame_index", "valid")}
    )
