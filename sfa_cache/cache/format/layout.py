"""Where things live in a feature cache directory, and the small JSON files that describe it.

    CACHE/extract.json              the job: settings and key (written first)
    CACHE/shards/shard-NNNNN.zarr   one Zarr v3 group per shard (see `write.py`)
    CACHE/shards/shard-NNNNN.done   completion marker, written atomically after the shard
    CACHE/failures.jsonl            clips that could not be decoded
    CACHE/cache.json                the index, written last: its presence means "complete"
                                    (both JSON files are `index.CacheIndex`, written by `builder.CacheBuilder`)
    CACHE/.locks/                   per-shard lock files held while a process writes a shard

Markers are the only truth about a shard: a shard folder without a valid marker (matching this
cache's key) is treated as garbage from an interrupted run, deleted and redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from sfa_cache.atomic import atomic_write_json
from sfa_cache.errors import SfaError

CACHE_FORMAT = 1
CACHE_FILE = "cache.json"
JOB_FILE = "extract.json"
SHARDS_DIR = "shards"
LOCKS_DIR = ".locks"

# The settings a cache can be made with (named here, with no heavy import, for the command line;
# the compressors are the names of the codec table, `codecs.COMPRESSORS`).
VIEW_MODES = ("train", "eval")  # augmented training views | the evaluation centre view or crops
DTYPES = ("float16", "float32")  # of the stored features


@dataclass(frozen=True)
class ShardPlan:
    """Shard `index` holds the global clips [start, stop) (manifest order)."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(num_clips: int, clips_per_shard: int) -> list[ShardPlan]:
    return [ShardPlan(i, start, min(start + clips_per_shard, num_clips))
            for i, start in enumerate(range(0, num_clips, clips_per_shard))]


def shard_path(cache_dir: str | os.PathLike, index: int) -> Path:
    return Path(cache_dir) / SHARDS_DIR / f"shard-{index:05d}.zarr"


def marker_path(cache_dir: str | os.PathLike, index: int) -> Path:
    return Path(cache_dir) / SHARDS_DIR / f"shard-{index:05d}.done"


def read_marker(cache_dir: str | os.PathLike, index: int, key: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The shard's marker, or None when absent, unreadable or written for another cache key."""
    path = marker_path(cache_dir, index)
    try:
        marker = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("shard") != index or (key is not None and marker.get("key") != key):
        return None
    return marker


def write_marker(cache_dir: str | os.PathLike, index: int, marker: dict[str, Any]) -> None:
    atomic_write_json(marker_path(cache_dir, index), marker)


def discard_shard(cache_dir: str | os.PathLike, index: int) -> None:
    """Remove a shard's data and marker (marker first, so a crash here never leaves a lie)."""
    marker_path(cache_dir, index).unlink(missing_ok=True)
    shutil.rmtree(shard_path(cache_dir, index), ignore_errors=True)


@contextlib.contextmanager
def shard_locks(cache_dir: str | os.PathLike, indices: list[int]) -> Iterator[None]:
    """Hold an exclusive lock on each shard this process may write, for the whole run.

    Two extractions of one cache at once (a resubmitted job, a second terminal) would delete and
    write each other's shards; the second one fails here instead, with a one-line error.
    """
    lock_dir = Path(cache_dir) / LOCKS_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    held = []
    try:
        for i in indices:
            f = open(lock_dir / f"shard-{i:05d}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise SfaError(f"shard {i} of {cache_dir} is being written by another extraction "
                               "(same command running twice?); let it finish or stop it first") from None
            held.append(f)
        yield
    finally:
        for f in held:
            f.close()  # closing releases the lock
