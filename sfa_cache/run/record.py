"""A run's record: RUN/config.json (a `RunRecord`) and RUN/classes.json, read and written here only.

config.json says what the run is (kind, model config, the job's settings, classes, where its
spatial features came from, library versions); classes.json is its class list on its own, in the
format a pack of WebDataset shards uses too (`data.manifest.CLASSES_FILE`). Every write is atomic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, get_args

from sfa_cache.atomic import atomic_write_json
from sfa_cache.data.manifest import CLASSES_FILE
from sfa_cache.errors import SfaError
from sfa_cache.folders import read_json_object
from sfa_cache.models.config import SpatialSource, ViViTConfig
from sfa_cache.settings_io import config_from_dict, config_to_dict

CONFIG_FILE = "config.json"
RUN_FORMAT = 1
RunKind = Literal["stage1", "stage2", "assembled"]
RUN_KINDS: tuple[str, ...] = get_args(RunKind)


@dataclass
class RunRecord:
    """config.json of a run directory. `train` is the job's own config as a dict (its type,
    `Stage1Config` or `TrainTemporalConfig`, belongs to the pipelines); fields a kind does not
    use are None and left out of the file."""

    kind: RunKind
    model: ViViTConfig
    train: Optional[dict[str, Any]] = None  # stage1 / stage2: the settings it trained with
    classes: list[str] = field(default_factory=list)
    world_size: Optional[int] = None  # stage1 / stage2: torchrun processes it trained with
    fingerprint: Optional[str] = None  # stage2 / assembled: the spatial ViT its features came from
    caches: Optional[dict[str, Optional[str]]] = None  # stage2: {"train": DIR, "val": DIR or None}
    spatial_source: Optional[SpatialSource] = None  # stage2: where its spatial weights are
    skipped_clips: Optional[dict[str, int]] = None  # stage2: cached clips left out (failed to decode)
    sources: Optional[dict[str, Any]] = None  # assembled: {"stage2": RUN, "spatial": its SpatialSource}
    versions: dict[str, str] = field(default_factory=dict)
    format: int = RUN_FORMAT

    def __post_init__(self) -> None:
        if self.kind not in RUN_KINDS:
            raise SfaError(f"unknown run kind {self.kind!r}; expected one of {', '.join(RUN_KINDS)}")

    def save(self, run_dir: str | os.PathLike) -> None:
        """Write RUN/config.json (atomically): the only place a run's record is written."""
        data = {k: v for k, v in config_to_dict(self).items() if v is not None}
        atomic_write_json(Path(run_dir) / CONFIG_FILE, {"format": data.pop("format"), **data})


def holds_run(folder: str | os.PathLike) -> bool:
    """Whether `folder` already holds a run (its config.json): the one to `--resume`."""
    return (Path(folder) / CONFIG_FILE).is_file()


def read_run_record(run_dir: str | os.PathLike) -> RunRecord:
    """RUN/config.json; a missing, malformed or newer-format record is a one-line error."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise SfaError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return run_record_from_json(read_json_object(path), where=str(path))


def run_record_from_json(data: dict[str, Any], *, where: str) -> RunRecord:
    """A RunRecord from config.json's parsed content (`where` names the file in errors)."""
    version = data.get("format")
    if not isinstance(version, int) or version > RUN_FORMAT:
        raise SfaError(f"{where}: run format {version!r} is not one this sfa-cache reads (up to {RUN_FORMAT}); "
                       "a newer sfa-cache wrote it?")
    return config_from_dict(RunRecord, data, where=where)


def read_model_config(run_dir: str | os.PathLike) -> ViViTConfig:
    """The ViViTConfig of a run directory."""
    return read_run_record(run_dir).model


def save_classes(run_dir: str | os.PathLike, classes: Sequence[str]) -> None:
    """RUN/classes.json: the class names, index i = class i."""
    atomic_write_json(Path(run_dir) / CLASSES_FILE, list(classes))


def write_record(run_dir: str | os.PathLike, record: RunRecord) -> None:
    """A new run's classes.json and config.json (`record`, its classes filled in)."""
    save_classes(run_dir, record.classes)
    record.save(run_dir)
