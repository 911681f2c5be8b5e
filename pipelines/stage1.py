"""Stage 1 (and the conventional baseline): train the whole ViViT-FE end to end on raw video.

`sfa-cache stage1 --frames 8` is SFA's Stage 1; the same command with `--frames 32` is the
conventional ViViT-FE baseline the rest of the project compares against.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.data.batches import EpochSampler
from sfa_cache.data.failures import record_failure
from sfa_cache.data.inputs import read_input
from sfa_cache.data.loaders import video_loader
from sfa_cache.data.manifest import Manifest, read_classes_file
from sfa_cache.data.video_dataset import VideoClipDataset
from sfa_cache.distributed import start_processes
from sfa_cache.errors import SfaError
from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig, temporal_preset
from sfa_cache.models.spatial import create_backbone
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.pipelines.job_configs import STAGE1_RUNTIME_KEYS, Stage1Config
from sfa_cache.run.claim import claim_run_dir
from sfa_cache.run.progress import failures_file
from sfa_cache.run.record import RunRecord
from sfa_cache.settings_io import config_to_dict
from sfa_cache.train.fit import begin_run, fit_tracked
from sfa_cache.train.loop import Trainer
from sfa_cache.train.tracking import resolve_trackers
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.reader import check_decoder
from sfa_cache.video.transforms import AugmentConfig

log = logging.getLogger("sfa_cache")



def _check_videos_exist(manifest: Manifest) -> None:
    """A CSV whose videos are all missing is a wrong --root, not a few bad files."""
    missing = [e.path for e in manifest.entries if isinstance(e.path, Path) and not os.path.exists(e.path)]
    if len(missing) == len(manifest):
        raise SfaError(
            f"none of the {len(manifest)} videos of {manifest.source} exist (first: {missing[0]}); check --root"
        )
    if missing:
        log.warning("%d of %d videos of %s are missing; they will be recorded and skipped (first: %s)",
                    len(missing), len(manifest), manifest.source, missing[0])


def build_model_config(cfg: Stage1Config, num_classes: int) -> ViViTConfig:
    spatial = SpatialConfig(
        backbone=cfg.backbone, image_size=cfg.image_size, frame_chunk=cfg.frame_chunk, drop_path=cfg.drop_path
    )
    temporal = TemporalConfig(num_frames=cfg.frames, depth=cfg.temporal_depth or 4)
    if cfg.temporal_preset is not None:  # the preset must match the backbone's width
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            embed_dim = create_backbone(spatial).embed_dim
        temporal = temporal_preset(cfg.temporal_preset, embed_dim, cfg.frames, cfg.temporal_depth)
    temporal = dataclasses.replace(temporal, drop_path=cfg.drop_path, pos_embed_std=cfg.temporal_pos_std)
    return ViViTConfig(num_classes=num_classes, spatial=spatial, adapter=AdapterConfig("none"), temporal=temporal)


def _read_inputs(cfg: Stage1Config) -> tuple[Manifest, Optional[Manifest]]:
    """The training and validation inputs, checked (videos there, a decoder that reads them)
    before anything is written."""
    train_m = read_input(cfg.train_manifest, read_classes_file(cfg.classes) if cfg.classes else None, cfg.root,
                         cfg.train_split)
    val_m = read_input(cfg.val_manifest, train_m.classes, cfg.root, cfg.val_split) if cfg.val_manifest else None
    if val_m is not None and {e.path for e in val_m.entries} == {e.path for e in train_m.entries}:
        log.warning("the validation input holds exactly the %d training videos: validation measures fit, not "
                    "generalisation (for a CSV split column or an HDF5 file's split groups, check --train-split / "
                    "--val-split)", len(train_m))
    for m in (train_m, val_m):
        if m is not None:
            _check_videos_exist(m)
            check_decoder(cfg.backend, [e.path for e in m.entries])
    return train_m, val_m


def run_stage1(cfg: Stage1Config, *, resume: bool = False) -> dict[str, Any]:
    """Train, evaluate every epoch, and write the run directory. Returns the last metrics."""
    cfg.validate()
    resolve_trackers(cfg.log)  # an unknown or uninstalled tracker fails before anything is written
    # Everything that can reject the input runs before the output folder is touched.
    train_m, val_m = _read_inputs(cfg)
    classes = train_m.classes
    model_cfg = build_model_config(cfg, len(classes))
    torch.manual_seed(cfg.seed)
    model = ViViTFE(model_cfg, pretrained=cfg.pretrained, backbone_weights=cfg.backbone_weights)
    if cfg.backbone_weights is None and not cfg.pretrained:
        log.warning("the spatial transformer starts from random weights (no --pretrained / --backbone-weights)")
    resuming = claim_run_dir(cfg.out, kind="stage1", train_config=config_to_dict(cfg), resume=resume,
                             runtime_keys=STAGE1_RUNTIME_KEYS)

    out = Path(cfg.out)
    info, device = start_processes(cfg.device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    s = model.cfg.spatial
    aug = AugmentConfig(color_jitter_prob=cfg.color_jitter_prob, flip_prob=cfg.flip_prob,
                          randaugment_ops=cfg.randaugment_ops, randaugment_magnitude=cfg.randaugment_magnitude)
    failures = failures_file(out)
    if info.is_main and not resuming:  # samples a WebDataset / HDF5 index left out
        for m in (train_m, val_m):
            for skipped in (m.skipped if m is not None else []):
                record_failure(failures, row=-1, **skipped)
    train_ds = VideoClipDataset(
        train_m, ClipSpec(cfg.frames, s.image_size, s.mean, s.std, True, cfg.backend, aug), cfg.seed, failures
    )
    train_sampler = EpochSampler(len(train_ds), shuffle=True, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    loader_args = dict(
        batch_size=cfg.optim.batch_size, num_workers=cfg.num_workers, decode_timeout=cfg.decode_timeout, device=device
    )
    train_loader = video_loader(train_ds, train_sampler, **loader_args)
    val_loader = None
    if val_m is not None:
        val_ds = VideoClipDataset(
            val_m, ClipSpec(cfg.frames, s.image_size, s.mean, s.std, False, cfg.backend), cfg.seed, failures
        )
        val_sampler = EpochSampler(len(val_ds), shuffle=False, rank=info.rank, world_size=info.world_size, pad=False)
        val_loader = video_loader(val_ds, val_sampler, **loader_args)
    trainer = Trainer(
        model, cfg.optim, steps_per_epoch=len(train_loader), num_classes=len(classes), device=device, seed=cfg.seed
    )

    begin_run(trainer, out, resuming=resuming, classes=classes, allow_world_size_change=cfg.allow_world_size_change,
              record=RunRecord(kind="stage1", model=model.cfg, train=config_to_dict(cfg)))
    if cfg.compile:
        model.compile()  # in place: state-dict keys stay the same

    return fit_tracked(trainer, out, log=cfg.log, config=config_to_dict(cfg), resuming=resuming,
                       train_loader=train_loader, train_sampler=train_sampler, val_loader=val_loader,
                       log_every=cfg.log_every, stop_after=cfg.stop_after)
