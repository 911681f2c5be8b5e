"""A run directory's record and weights: the one module that reads and writes them.

    RUN/config.json        a `RunRecord`: kind, the model's config, the job's settings, classes,
                           where its spatial features came from, library versions
    RUN/model.safetensors  the weights, with the spatial fingerprint in the header metadata

and what is rebuilt from them: the end-to-end model, its spatial part alone, the Stage-1 ->
Stage-2 initialisation, and the spatial ViT a cache was extracted with (its "source").
Training state and metrics (train_state.pt, metrics.jsonl) belong to the training loop
(`train/run_dir.py`). Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sfa_cache.atomic import atomic_write, atomic_write_json
from sfa_cache.configs import config_from_dict, config_to_dict
from sfa_cache.errors import SfaError
from sfa_cache.folders import read_json_object
from sfa_cache.models.config import SpatialConfig, SpatialSource, ViViTConfig
from sfa_cache.models.fingerprint import FINGERPRINT_VERSION, spatial_fingerprint
from sfa_cache.models.spatial import SpatialTransformer, build_backbone_spatial
from sfa_cache.models.vivit import ViViTFE, load_vivit_state_dict

log = logging.getLogger("sfa_cache")

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
RUN_FORMAT = 1
RunKind = Literal["stage1", "stage2", "assembled"]
RUN_KINDS: tuple[str, ...] = get_args(RunKind)
# In the safetensors header metadata; versioned so that a stale definition is never trusted.
FINGERPRINT_KEY = f"spatial_fingerprint_v{FINGERPRINT_VERSION}"


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


# --- weights ------------------------------------------------------------------------------------

def save_model_weights(model: ViViTFE, run_dir: str | Path) -> None:
    """Write `model.safetensors` atomically, with the spatial fingerprint in its header metadata.

    The fingerprint travels with the weights it describes, so a cache can be matched to a run
    without hashing the run's weights again.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {}
    if model.spatial is not None:
        metadata[FINGERPRINT_KEY] = spatial_fingerprint(model.spatial.backbone.state_dict(), model.cfg.spatial)
    atomic_write(Path(run_dir) / MODEL_FILE, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def _weights_file(run_dir: str | Path) -> Path:
    weights = Path(run_dir) / MODEL_FILE
    if not weights.is_file():
        raise SfaError(f"{run_dir} has no {MODEL_FILE}")
    return weights


def read_spatial_fingerprint(run_dir: str | Path) -> str:
    """The spatial fingerprint of a run directory's weights (from the header, else computed)."""
    with safe_open(str(_weights_file(run_dir)), framework="pt") as f:
        stored = (f.metadata() or {}).get(FINGERPRINT_KEY)
    if stored:
        return stored
    spatial, cfg = load_spatial(run_dir)
    return spatial_fingerprint(spatial.backbone.state_dict(), cfg)


def load_spatial(run_dir: str | Path) -> tuple[SpatialTransformer, SpatialConfig]:
    """Only the spatial transformer of a run directory (Stage 1 or assembled), weights loaded.

    The returned config has mean/std resolved. The temporal part is never built.
    """
    cfg = read_run_record(run_dir).model.spatial
    if cfg.mean is None or cfg.std is None:
        raise SfaError(f"{run_dir}: the model config has no resolved mean/std")
    with safe_open(str(_weights_file(run_dir)), framework="pt") as f:
        state = {k.removeprefix("spatial."): f.get_tensor(k) for k in f.keys() if k.startswith("spatial.")}
    if not state:
        raise SfaError(f"{run_dir} holds no spatial weights (a Stage-2 run?); give the Stage-1 or assembled run")
    spatial = SpatialTransformer(cfg)
    own = spatial.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in state if k not in own or state[k].shape != own[k].shape]
    if missing or wrong:
        raise SfaError(f"{run_dir}: spatial weights do not fit {cfg.backbone} at {cfg.image_size} px "
                       f"(missing {missing[:4]}, unexpected or mis-shaped {wrong[:4]})")
    spatial.load_state_dict(state)
    return spatial, cfg


def read_model_config(run_dir: str | Path) -> ViViTConfig:
    """The ViViTConfig of a run directory."""
    return read_run_record(run_dir).model


def load_model(run_dir: str | Path, *, num_frames: Optional[int] = None, with_spatial: bool = True) -> ViViTFE:
    """Rebuild the model of a run directory from its config and weights.

    `num_frames` rebuilds the temporal part for another clip length (position embeddings are
    interpolated).
    """
    cfg = read_model_config(run_dir)
    if num_frames is not None:
        cfg = dataclasses.replace(cfg, temporal=dataclasses.replace(cfg.temporal, num_frames=num_frames))
    model = ViViTFE(cfg, with_spatial=with_spatial)
    load_vivit_state_dict(model, load_file(str(_weights_file(run_dir))), where=f"the run {run_dir}")
    return model


def init_from_stage1(model: ViViTFE, stage1: str | Path, classes: list[str]) -> None:
    """Load the Stage-1 temporal transformer into a Stage-2 `model` (position embeddings resized to F).

    The adapter is new in Stage 2 and keeps its own initialisation. A Stage-1 run trained on
    another class list (cross-dataset initialisation, paper Table 2) gives everything but the
    classification head, which keeps its own (zero) initialisation.
    """
    stage1_classes = read_run_record(stage1).classes
    drop: tuple[str, ...] = ()
    if stage1_classes != classes:
        log.warning("the Stage-1 run has other classes (%d) than the cache (%d): its head is not used",
                    len(stage1_classes), len(classes))
        drop = ("temporal.head.",)
    load_vivit_state_dict(model, load_file(str(_weights_file(stage1))), allow_missing=("adapter.",), drop=drop,
                          where=f"the Stage-1 run {stage1}")


# --- the spatial ViT behind a cache ---------------------------------------------------------------

def spatial_from_source(source: SpatialSource, fingerprint: str, *,
                        run: Optional[str | Path] = None) -> tuple[SpatialTransformer, SpatialConfig]:
    """Rebuild the spatial transformer a cache was extracted with, checked against its fingerprint.

    `run` replaces the run the cache records (one that has moved since). Weights that cannot be
    rebuilt offline (timm hub), a recorded run that is gone, or weights that changed since
    extraction are an error naming the fingerprints or saying what to pass.
    """
    if run is None and source.run is not None:
        run = source.run
        if not (Path(run) / CONFIG_FILE).is_file():
            raise SfaError(f"the run holding the spatial weights, {run}, is not there any more; pass "
                           "--spatial-run with where it is now")
    if run is not None:
        spatial, cfg = load_spatial(run)
        where = f"run {run}"
    else:
        if source.weights == "timm-hub":
            raise SfaError(f"the cache was extracted from {source.backbone} hub weights, which cannot be fetched "
                           "offline; pass --spatial-run with a run holding those weights")
        spatial, cfg = build_backbone_spatial(source.backbone, int(source.image_size), seed=source.seed or 0,
                                              weights=None if source.weights in (None, "random") else source.weights)
        where = f"backbone {source.backbone} ({source.weights})"
    found = spatial_fingerprint(spatial.backbone.state_dict(), cfg)
    if found != fingerprint:
        raise SfaError(f"the spatial weights of {where} (fingerprint {found}) are not those the cache was "
                       f"extracted with ({fingerprint}); they changed since extraction")
    return spatial, cfg
