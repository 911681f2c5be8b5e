"""A run's weights: RUN/model.safetensors, with the spatial fingerprint in its header metadata,
and what is rebuilt from them: the end-to-end model, its spatial part alone, the Stage-1 ->
Stage-2 initialisation, and the spatial ViT a cache was extracted with (its "source").
Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sfa_cache.atomic import atomic_write
from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig, SpatialSource
from sfa_cache.models.fingerprint import FINGERPRINT_VERSION, spatial_fingerprint
from sfa_cache.models.spatial import SpatialTransformer, build_backbone_spatial
from sfa_cache.models.vivit import ViViTFE, load_vivit_state_dict
from sfa_cache.run.record import holds_run, read_model_config, read_run_record

log = logging.getLogger("sfa_cache")

MODEL_FILE = "model.safetensors"
# In the safetensors header metadata; versioned so that a stale definition is never trusted.
FINGERPRINT_KEY = f"spatial_fingerprint_v{FINGERPRINT_VERSION}"


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


def read_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of RUN/model.safetensors, by name (on the CPU)."""
    return load_file(str(_weights_file(run_dir)))


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
        if not holds_run(run):
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
