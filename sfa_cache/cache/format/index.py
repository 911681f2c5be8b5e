"""The feature cache's index, typed: what extract.json (the job, written first) and cache.json
(the same plus the shard table and clip counts, written last) hold.

Read and written only through `CacheIndex`; the builder (`cache/extraction/builder.py`) is the
one writer. A malformed index, or one of a newer format, is a one-line error. The content key
that names a cache folder is computed here, from the fingerprint, the extraction settings and
the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from sfa_cache.atomic import atomic_write_json
from sfa_cache.cache.format.codecs import COMPRESSORS
from sfa_cache.cache.format.layout import CACHE_FILE, CACHE_FORMAT, DTYPES, JOB_FILE, VIEW_MODES
from sfa_cache.errors import SfaError
from sfa_cache.folders import read_json_object
from sfa_cache.models.config import SpatialSource
from sfa_cache.settings_io import config_from_dict, config_to_dict


@dataclass
class CachedSpatial:
    """The spatial ViT whose CLS tokens are cached, and the normalisation of its input."""

    backbone: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass
class ViewSettings:
    """How each clip's views were made: augmented training views or the evaluation crops."""

    OMIT_NONE: ClassVar[tuple[str, ...]] = ("seed", "augment", "crops")

    mode: str  # train | eval
    count: int  # views per clip
    sampling: str = "uniform-segment"
    seed: Optional[int] = None  # train: the augmentation's seed
    augment: Optional[dict[str, Any]] = None  # train: the AugmentConfig
    crops: Optional[int] = None  # eval: 1 or 3 spatial crops

    def __post_init__(self) -> None:
        if self.mode not in VIEW_MODES:
            raise SfaError(f"view mode must be one of {', '.join(VIEW_MODES)}, got {self.mode!r}")


@dataclass
class ExtractionSettings:
    """Every setting that changes the cached values or their layout: part of the content key."""

    frames: int
    views: ViewSettings
    dtype: str
    amp: str
    decoder: str
    compressor: str
    clips_per_shard: int
    # How frames reached the model: "uint8" (rounded to 8 bits in the decode workers, normalised
    # on the device: cache/extraction/decode_jobs.py) since 2026-12; "float32" for caches made before, which an
    # index without the field describes. The rounding moves features by ~1e-3 relative, so it is
    # part of the key: an older cache is never reused or resumed as if it were a uint8 one.
    transport: str = "float32"

    def __post_init__(self) -> None:
        if self.transport not in ("uint8", "float32"):
            raise SfaError(f"unknown frame transport {self.transport!r}")
        if self.dtype not in DTYPES or self.compressor not in COMPRESSORS:
            raise SfaError(f"unknown dtype {self.dtype!r} or compressor {self.compressor!r}")


@dataclass
class ManifestInfo:
    """The input the clips came from, in cache order."""

    OMIT_NONE: ClassVar[tuple[str, ...]] = ("keys", "skipped")

    path: str
    kind: str  # csv | wds | h5
    keys: Optional[list[str]] = None  # sample keys of WebDataset / HDF5 inputs
    skipped: Optional[list[dict[str, Any]]] = None  # samples left out when the input was indexed
    split: Optional[str] = None
    rows: list[int] = field(default_factory=list)  # the manifest row of each cached clip, in order
    digest: str = ""  # rows, labels, classes and each video's identity (data.manifest.manifest_digest)


@dataclass
class ShardEntry:
    """Shard `index` holds the clips [start, stop); its data's checksum; how many decoded."""

    index: int
    start: int
    stop: int
    checksum: str
    valid: int


@dataclass
class CacheIndex:
    """extract.json (the job) and, once every shard has its marker, cache.json (the job plus the
    counts, the shard table and the completion time)."""

    OMIT_NONE: ClassVar[tuple[str, ...]] = ("num_clips", "valid_clips", "failed_clips", "shards", "completed")

    fingerprint: str  # of the spatial ViT's weights and preprocessing (models/fingerprint.py)
    spatial: CachedSpatial
    preprocessing: dict[str, Any]
    source: SpatialSource
    extraction: ExtractionSettings
    views: int
    frames: int
    dim: int
    dtype: str
    classes: list[str]
    manifest: ManifestInfo
    versions: dict[str, str]
    key: str = ""  # sha256 of the fingerprint, the extraction settings and the manifest digest (cache_key)
    num_clips: Optional[int] = None
    valid_clips: Optional[int] = None
    failed_clips: Optional[int] = None
    shards: Optional[list[ShardEntry]] = None
    completed: Optional[str] = None  # UTC time cache.json was written
    format: int = CACHE_FORMAT
    kind: str = "feature-cache"

    @property
    def complete(self) -> bool:
        return self.shards is not None

    def as_json(self) -> dict[str, Any]:
        """The file's content: format, kind and key first, then the fields in order."""
        data = config_to_dict(self)
        return {"format": data.pop("format"), "kind": data.pop("kind"), "key": data.pop("key"), **data}

    def write(self, cache_dir: str | os.PathLike) -> None:
        """extract.json for a job, cache.json for a complete index (atomically)."""
        atomic_write_json(Path(cache_dir) / (CACHE_FILE if self.complete else JOB_FILE), self.as_json())


def cache_key(fingerprint: str, extraction: ExtractionSettings, manifest_digest: str) -> str:
    """The content key: the same spatial weights, settings and input give the same cache folder."""
    blob = json.dumps([fingerprint, config_to_dict(extraction), manifest_digest], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_index_from_json(data: dict[str, Any], *, where: str) -> CacheIndex:
    """A CacheIndex from extract.json's or cache.json's parsed content (`where` names the file)."""
    version = data.get("format")
    if not isinstance(version, int) or version > CACHE_FORMAT:
        raise SfaError(f"{where}: cache format {version!r} is not one this sfa-cache reads (up to {CACHE_FORMAT}); "
                       "a newer sfa-cache wrote it?")
    if data.get("kind") != "feature-cache":
        raise SfaError(f"{where} is not a feature-cache index (kind {data.get('kind')!r})")
    return config_from_dict(CacheIndex, data, where=where)


def _parse(path: Path) -> CacheIndex:
    return cache_index_from_json(read_json_object(path), where=str(path))


def read_cache_index(cache_dir: str | os.PathLike) -> CacheIndex:
    """cache.json of a finished cache (an error naming the state of an unfinished one)."""
    cache_dir = Path(cache_dir)
    if (cache_dir / CACHE_FILE).is_file():
        index = _parse(cache_dir / CACHE_FILE)
        if not index.complete:
            raise SfaError(f"{cache_dir / CACHE_FILE} has no shard table")
        return index
    if (cache_dir / JOB_FILE).is_file():
        raise SfaError(
            f"{cache_dir} is an unfinished cache (no {CACHE_FILE}); rerun the same extract command to finish it"
        )
    raise SfaError(f"{cache_dir} is not a feature cache (no {CACHE_FILE})")


def read_cache_job(cache_dir: str | os.PathLike) -> CacheIndex:
    """extract.json: the job of a cache, finished or not."""
    return _parse(Path(cache_dir) / JOB_FILE)
