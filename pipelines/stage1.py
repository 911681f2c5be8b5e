"""Stage 1 (and the conventional baseline): train the whole ViViT-FE end to end on raw video.

`sfa-cache stage1 --frames 8` is SFA's Stage 1; the same command with `--frames 32` is the
conventional ViViT-FE baseline the rest of the project compares against.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.configs import config_from_dict, config_to_dict
from sfa_cache.data.failures import record_failure
from sfa_cache.data.inputs import read_input
from sfa_cache.data.loaders import video_loader
from sfa_cache.data.manifest import Manifest, read_classes_file
from sfa_cache.data.video_dataset import ClipSpec, EpochSampler, VideoClipDataset
from sfa_cache.distributed import dist_info, start_processes
from sfa_cache.errors import SfaError
from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig, temporal_preset
from sfa_cache.models.spatial import create_backbone
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.train import run_dir as rd
from sfa_cache.train.fit import begin_run, fit
from sfa_cache.train.loop import OptimConfig, Trainer
from sfa_cache.video.reader import BACKENDS
from sfa_cache.video.transforms import AugmentConfig

log = logging.getLogger("sfa_cache")

# The paper's per-dataset recipe (supplementary Table 1). Learning rates are for a global batch
# of 128 and are scaled linearly to the global batch (batch_size * accum_steps * processes under
# torchrun) unless --lr is given. RandAugment (EPIC, SSv2) is not implemented; those presets run without it.
PRESET_BATCH = 128
PRESETS: dict[str, dict[str, Any]] = {
    "k400": {"lr": 0.1, "epochs": 30, "color_jitter_prob": 0.8},
    "k600": {"lr": 0.1, "epochs": 30, "color_jitter_prob": 0.8},
    "mit": {"lr": 0.25, "epochs": 10, "color_jitter_prob": 0.8},
    "epic": {"lr": 0.5, "epochs": 50, "color_jitter_prob": 0.0, "drop_path": 0.2, "label_smoothing": 0.2, "mixup": 0.1},
    # Something-Something (and Something-Else) have left/right classes: a flip would swap them.
    "ssv2": {"lr": 0.5, "epochs": 35, "color_jitter_prob": 0.0, "flip_prob": 0.0, "drop_path": 0.3,
             "label_smoothing": 0.3, "mixup": 0.3},
    "selse": {"lr": 0.5, "epochs": 35, "color_jitter_prob": 0.0, "flip_prob": 0.0},
}
PRESET_COMMON = {"optimizer": "sgd", "momentum": 0.9, "warmup_epochs": 2.5}

# Settings that may change between a run and its resumption without changing its result.
RUNTIME_KEYS = frozenset({"out", "device", "num_workers", "decode_timeout", "log_every", "stop_after", "compile", "channels_last",
                          "allow_world_size_change"})


@dataclass
class Stage1Config:
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
    optim: OptimConfig = field(default_factory=OptimConfig)
    backend: str = "decord"
    device: str = "auto"
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 4
    decode_timeout: float = 60.0  # seconds per clip before its decoder is killed and the clip skipped; 0: none
    seed: int = 0
    log_every: int = 50  # optimiser steps between metrics.jsonl train records; 0 = per epoch only
    stop_after: Optional[int] = None  # stop after this many epochs in this invocation
    allow_world_size_change: bool = False  # resume with another number of torchrun processes
    preset: Optional[str] = None

    def validate(self) -> None:
        if self.frames < 1:
            raise SfaError(f"--frames must be >= 1, got {self.frames}")
        if self.backend not in BACKENDS:
            raise SfaError(f"unknown video backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.pretrained and self.backbone_weights:
            raise SfaError("give either --pretrained or --backbone-weights, not both")
        if self.stop_after is not None and self.stop_after < 1:
            raise SfaError("--stop-after must be >= 1")
        if self.decode_timeout < 0:
            raise SfaError("--decode-timeout must be >= 0")
        self.optim.validate()


def resolve_config(values: dict[str, Any]) -> Stage1Config:
    """Defaults < preset < explicit `values` (flat keys; optimiser keys go into `optim`)."""
    values = dict(values)
    preset = values.get("preset")
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise SfaError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        merged.update(PRESET_COMMON)
        merged.update(PRESETS[preset])
        if "lr" not in values:
            batch = (values.get("batch_size", OptimConfig.batch_size) * values.get("accum_steps", OptimConfig.accum_steps)
                     * dist_info().world_size)
            merged["lr"] = merged["lr"] * batch / PRESET_BATCH
    merged.update(values)
    optim_keys = {f.name for f in dataclasses.fields(OptimConfig)}
    optim = {k: merged.pop(k) for k in list(merged) if k in optim_keys}
    merged["optim"] = optim
    return config_from_dict(Stage1Config, merged, where="stage1 options")


def _check_videos_exist(manifest: Manifest) -> None:
    """A CSV whose videos are all missing is a wrong --root, not a few bad files."""
    missing = [e.path for e in manifest.entries if isinstance(e.path, Path) and not os.path.exists(e.path)]
    if len(missing) == len(manifest):
        raise SfaError(f"none of the {len(manifest)} videos of {manifest.source} exist (first: {missing[0]}); check --root")
    if missing:
        log.warning("%d of %d videos of %s are missing; they will be recorded and skipped (first: %s)",
                    len(missing), len(manifest), manifest.source, missing[0])


def build_model_config(cfg: Stage1Config, num_classes: int) -> ViViTConfig:
    spatial = SpatialConfig(backbone=cfg.backbone, image_size=cfg.image_size, frame_chunk=cfg.frame_chunk, drop_path=cfg.drop_path)
    temporal = TemporalConfig(num_frames=cfg.frames, depth=cfg.temporal_depth or 4)
    if cfg.temporal_preset is not None:  # the preset must match the backbone's width
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            embed_dim = create_backbone(spatial).embed_dim
        temporal = temporal_preset(cfg.temporal_preset, embed_dim, cfg.frames, cfg.temporal_depth)
    temporal = dataclasses.replace(temporal, drop_path=cfg.drop_path, pos_embed_std=cfg.temporal_pos_std)
    return ViViTConfig(num_classes=num_classes, spatial=spatial, adapter=AdapterConfig("none"), temporal=temporal)


def run_stage1(cfg: Stage1Config, *, resume: bool = False) -> dict[str, Any]:
    """Train, evaluate every epoch, and write the run directory. Returns the last metrics."""
    cfg.validate()
    # Everything that can reject the input runs before the output folder is touched.
    train_m = read_input(cfg.train_manifest, read_classes_file(cfg.classes) if cfg.classes else None, cfg.root,
                         cfg.train_split)
    classes = train_m.classes
    val_m = read_input(cfg.val_manifest, classes, cfg.root, cfg.val_split) if cfg.val_manifest else None
    if val_m is not None and {e.path for e in val_m.entries} == {e.path for e in train_m.entries}:
        log.warning("the validation input holds exactly the %d training videos: validation measures fit, not "
                    "generalisation (for a CSV split column or an HDF5 file's split groups, check --train-split / "
                    "--val-split)", len(train_m))
    for m in (train_m, val_m):
        if m is not None:
            _check_videos_exist(m)
    model_cfg = build_model_config(cfg, len(classes))
    torch.manual_seed(cfg.seed)
    model = ViViTFE(model_cfg, pretrained=cfg.pretrained, backbone_weights=cfg.backbone_weights)
    if cfg.backbone_weights is None and not cfg.pretrained:
        log.warning("the spatial transformer starts from random weights (no --pretrained / --backbone-weights)")
    resuming = rd.prepare_run_dir(cfg.out, kind="stage1", train_config=config_to_dict(cfg), resume=resume,
                                  runtime_keys=RUNTIME_KEYS)

    out = Path(cfg.out)
    info, device = start_processes(cfg.device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    s = model.cfg.spatial
    aug = AugmentConfig(color_jitter_prob=cfg.color_jitter_prob, flip_prob=cfg.flip_prob)
    failures = out / rd.FAILURES_FILE
    if info.is_main and not resuming:  # samples a WebDataset / HDF5 index left out
        for m in (train_m, val_m):
            for skipped in (m.skipped if m is not None else []):
                record_failure(failures, row=-1, **skipped)
    train_ds = VideoClipDataset(train_m, ClipSpec(cfg.frames, s.image_size, s.mean, s.std, True, cfg.backend, aug), cfg.seed, failures)
    train_sampler = EpochSampler(len(train_ds), shuffle=True, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    loader_args = dict(batch_size=cfg.optim.batch_size, num_workers=cfg.num_workers, decode_timeout=cfg.decode_timeout, device=device)
    train_loader = video_loader(train_ds, train_sampler, **loader_args)
    val_loader = None
    if val_m is not None:
        val_ds = VideoClipDataset(val_m, ClipSpec(cfg.frames, s.image_size, s.mean, s.std, False, cfg.backend), cfg.seed, failures)
        val_sampler = EpochSampler(len(val_ds), shuffle=False, rank=info.rank, world_size=info.world_size, pad=False)
        val_loader = video_loader(val_ds, val_sampler, **loader_args)
    trainer = Trainer(model, cfg.optim, steps_per_epoch=len(train_loader), num_classes=len(classes), device=device, seed=cfg.seed)

    begin_run(trainer, out, resuming=resuming, classes=classes, allow_world_size_change=cfg.allow_world_size_change,
              config={"format": 1, "kind": "stage1", "model": config_to_dict(model.cfg), "train": config_to_dict(cfg)})
    if cfg.compile:
        model.compile()  # in place: state-dict keys stay the same

    return fit(trainer, out, train_loader=train_loader, train_sampler=train_sampler, val_loader=val_loader,
               log_every=cfg.log_every, stop_after=cfg.stop_after)
