"""`sfa-cache stage1`'s config: the whole ViViT-FE on raw video, and the paper's per-dataset presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sfa_cache.errors import SfaError
from sfa_cache.pipelines.job_configs.common import (
    DecodeOptions,
    RuntimeOptions,
    check_randaugment,
    flatten_optim,
    nest_optim,
)
from sfa_cache.settings_io import config_from_dict
from sfa_cache.train.optim import OptimConfig

# The paper's per-dataset recipe (supplementary Table 1). Learning rates are for a global batch
# of 128 and are scaled linearly to the global batch (batch_size * accum_steps * processes under
# torchrun) unless --lr is given.
PRESET_BATCH = 128
PRESETS: dict[str, dict[str, Any]] = {
    "k400": {"lr": 0.1, "epochs": 30, "color_jitter_prob": 0.8},
    "k600": {"lr": 0.1, "epochs": 30, "color_jitter_prob": 0.8},
    "mit": {"lr": 0.25, "epochs": 10, "color_jitter_prob": 0.8},
    "epic": {"lr": 0.5, "epochs": 50, "color_jitter_prob": 0.0, "randaugment_ops": 2, "randaugment_magnitude": 15,
             "drop_path": 0.2, "label_smoothing": 0.2, "mixup": 0.1},
    # Something-Something (and Something-Else) have left/right classes: a flip would swap them.
    "ssv2": {"lr": 0.5, "epochs": 35, "color_jitter_prob": 0.0, "flip_prob": 0.0, "randaugment_ops": 2,
             "randaugment_magnitude": 20, "drop_path": 0.3, "label_smoothing": 0.3, "mixup": 0.3},
    "selse": {"lr": 0.5, "epochs": 35, "color_jitter_prob": 0.0, "flip_prob": 0.0},
}
PRESET_COMMON = {"optimizer": "sgd", "momentum": 0.9, "warmup_epochs": 2.5}

# Settings that may change between a run and its resumption without changing its result.
STAGE1_RUNTIME_KEYS = frozenset(
    {
        "out", "device", "num_workers", "decode_timeout", "log_every", "stop_after", "compile", "channels_last",
        "allow_world_size_change", "log",
    }
)


@dataclass
class Stage1Config(RuntimeOptions, DecodeOptions):
    """Everything `sfa-cache stage1` takes; saved under 'train' in the run's config.json."""

    train_manifest: str  # a CSV, WebDataset shards ('shards/train-{000000..000099}.tar') or an HDF5 frame file
    out: str
    val_manifest: Optional[str] = None
    root: Optional[str] = None  # folder a CSV's video paths are relative to (default: each CSV's folder)
    classes: Optional[str] = None  # class list file; default: inferred from the train manifest
    train_split: str = "train"  # rows kept when a manifest has a 'split' column
    val_split: str = "val"
    backbone: str = "vit_base_patch16_224"
    image_size: int = 224
    pretrained: bool = False  # timm hub weights for the backbone's tag (needs internet)
    backbone_weights: Optional[str] = None  # local image checkpoint (.safetensors/.pth/.bin)
    frames: int = 8
    frame_chunk: int = 64
    temporal_depth: Optional[int] = None  # None: 4, or the preset's depth
    temporal_preset: Optional[str] = None  # B | L | H | g
    temporal_pos_std: float = 0.02  # init std of the temporal position embeddings
    drop_path: float = 0.0
    color_jitter_prob: float = 0.8
    flip_prob: float = 0.5  # 0 for datasets with left/right classes (SSv2, the synthetic move_left/right)
    randaugment_ops: int = 0  # RandAugment operations per clip (the epic / ssv2 presets: 2); 0 = off
    randaugment_magnitude: int = 0  # on torchvision's 0-30 scale (epic: 15, ssv2: 20)
    optim: OptimConfig = field(default_factory=OptimConfig)
    channels_last: bool = False
    compile: bool = False
    num_workers: int = field(default=4, kw_only=True)  # RuntimeOptions' field, more workers by default: decoding
    seed: int = 0
    log_every: int = 50  # optimiser steps between metrics.jsonl train records; 0 = per epoch only
    log: str = "auto"  # trackers besides metrics.jsonl: auto (TensorBoard if installed + CSV) | none | a list
    stop_after: Optional[int] = None  # stop after this many epochs in this invocation
    allow_world_size_change: bool = False  # resume with another number of torchrun processes
    preset: Optional[str] = None

    def validate(self) -> None:
        if self.frames < 1:
            raise SfaError(f"--frames must be >= 1, got {self.frames}")
        check_randaugment(self.randaugment_ops, self.randaugment_magnitude)
        self.validate_runtime()
        self.validate_decoding()
        if self.pretrained and self.backbone_weights:
            raise SfaError("give either --pretrained or --backbone-weights, not both")
        if self.stop_after is not None and self.stop_after < 1:
            raise SfaError("--stop-after must be >= 1")
        if self.optim.patience and not self.val_manifest:
            raise SfaError("--patience stops on validation top-1: give --val-manifest")
        self.optim.validate()


def resolve_stage1_config(values: dict[str, Any]) -> Stage1Config:
    """Defaults < preset < `values`: option values (flat; optimiser keys go into `optim`) or a
    saved config.json 'train' section (nested `optim`), or both (flat keys win)."""
    where = "stage1 options"
    values = flatten_optim(values, where)
    preset = values.get("preset")
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise SfaError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        merged.update(PRESET_COMMON)
        merged.update(PRESETS[preset])
        if "lr" not in values:
            from sfa_cache.distributed import dist_info  # torchrun's process count, from the environment

            batch = (
                values.get("batch_size", OptimConfig.batch_size)
                * values.get("accum_steps", OptimConfig.accum_steps)
                * dist_info().world_size
            )
            merged["lr"] = merged["lr"] * batch / PRESET_BATCH
    merged.update(values)
    return config_from_dict(Stage1Config, nest_optim(merged), where=where)
