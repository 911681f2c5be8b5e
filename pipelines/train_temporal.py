"""Stage 2: train the adapter and the temporal transformer on cached spatial features.

The spatial transformer is never built here: the model is adapter + temporal over the cached
CLS tokens [B, F, D], so memory and time do not depend on the spatial backbone's size. The
temporal transformer starts from the Stage-1 run (position embeddings interpolated from its 8
frames to F) or, for the ablation, from scratch. At the end the Stage-2 weights are joined with
the spatial weights into an end-to-end run directory (OUT/assembled).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.cache.feeds.dataset import CachedFeatureDataset, check_frames
from sfa_cache.cache.feeds.epochs import WindowedEpochSampler, window_class_coverage
from sfa_cache.cache.feeds.shared import Preloaded
from sfa_cache.cache.feeds.stage2 import make_feeds
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.cost.memory_model import estimate_step_memory
from sfa_cache.distributed import DistInfo, barrier, start_processes
from sfa_cache.errors import SfaError
from sfa_cache.models.config import (
    AdapterConfig,
    SpatialConfig,
    SpatialSource,
    TemporalConfig,
    ViViTConfig,
    temporal_preset,
)
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.pipelines.assemble import assemble
from sfa_cache.pipelines.job_configs import TRAIN_TEMPORAL_RUNTIME_KEYS, TrainTemporalConfig
from sfa_cache.run.claim import claim_run_dir
from sfa_cache.run.record import RunRecord, read_model_config
from sfa_cache.run.weights import init_from_stage1, read_spatial_fingerprint
from sfa_cache.settings_io import config_to_dict
from sfa_cache.train.fit import begin_run, fit_tracked
from sfa_cache.train.loop import Trainer
from sfa_cache.train.optim import trainable_count
from sfa_cache.train.tracking import resolve_trackers

log = logging.getLogger("sfa_cache")

ASSEMBLED_DIR = "assembled"



def open_caches(cfg: TrainTemporalConfig) -> tuple[FeatureCache, Optional[FeatureCache]]:
    """The train (and eval) caches, checked to describe the same features and classes."""
    train = FeatureCache(cfg.train_cache)
    val = FeatureCache(cfg.val_cache) if cfg.val_cache else None
    if val is not None:
        for what, a, b in (("fingerprint", train.fingerprint, val.fingerprint), ("feature width", train.dim, val.dim),
                           ("class list", train.classes, val.classes)):
            if a != b:
                raise SfaError(f"the train cache {train.dir} and the eval cache {val.dir} differ in {what}")
    return train, val


def check_fingerprint(stage1: str, cache: FeatureCache) -> None:
    """Stage 2 trains on features of the Stage-1 spatial transformer, or not at all."""
    fp = read_spatial_fingerprint(stage1)
    if fp != cache.fingerprint:
        raise SfaError(f"the Stage-1 run {stage1} (spatial fingerprint {fp}) is not the model the cache {cache.dir} "
                       f"was extracted with (fingerprint {cache.fingerprint}); extract the cache from this run")


def build_model_config(cfg: TrainTemporalConfig, cache: FeatureCache) -> ViViTConfig:
    """Spatial side from the cache, temporal side from the Stage-1 run (or the options), F frames."""
    adapter = AdapterConfig(cfg.adapter, cfg.adapter_hidden)
    s = cache.index.spatial
    spatial = SpatialConfig(backbone=s.backbone, image_size=s.image_size, mean=s.mean, std=s.std)
    if cfg.stage1 is not None:
        base = read_model_config(cfg.stage1)
        spatial = dataclasses.replace(base.spatial, mean=spatial.mean, std=spatial.std)
        temporal = dataclasses.replace(base.temporal, num_frames=cfg.frames, drop_path=cfg.drop_path)
    elif cfg.temporal_preset is not None:
        temporal = dataclasses.replace(temporal_preset(cfg.temporal_preset, cache.dim, cfg.frames, cfg.temporal_depth),
                                       drop_path=cfg.drop_path)
    else:
        temporal = TemporalConfig(num_frames=cfg.frames, depth=cfg.temporal_depth or 4, drop_path=cfg.drop_path)
    if cfg.temporal_pos_std is not None:  # without a Stage-1 run (checked): its own position-table init
        temporal = dataclasses.replace(temporal, pos_embed_std=cfg.temporal_pos_std)
    return ViViTConfig(num_classes=len(cache.classes), spatial=spatial, adapter=adapter, temporal=temporal,
                       embed_dim=cache.dim)


def check_inputs(cfg: TrainTemporalConfig) -> tuple[FeatureCache, Optional[FeatureCache]]:
    """Everything that can reject a Stage-2 job before it starts: settings, caches, fingerprint, F."""
    cfg.validate()
    resolve_trackers(cfg.log)
    train_cache, val_cache = open_caches(cfg)
    if cfg.stage1 is not None:
        check_fingerprint(cfg.stage1, train_cache)
    for cache in (train_cache, val_cache):
        if cache is not None:
            check_frames(cache, cfg.frames)
    return train_cache, val_cache


def step_bytes(model_cfg: ViViTConfig, cfg: TrainTemporalConfig, device: torch.device) -> int:
    """The training step's own peak on a GPU (the memory model), kept free beside resident features."""
    if device.type != "cuda":
        return 0
    return estimate_step_memory("cached", model_cfg, batch=cfg.optim.batch_size, amp=cfg.optim.amp,
                                optimizer=cfg.optim.optimizer).total


def _epoch_samplers(cfg: TrainTemporalConfig, train_ds: CachedFeatureDataset, val_ds: Optional[CachedFeatureDataset],
                    info: DistInfo) -> tuple[WindowedEpochSampler, Optional[tuple[CachedFeatureDataset, Any]]]:
    """The training order (shards shuffled within windows, this rank's share) and the validation
    part (dataset, its unshuffled order); warns when a window holds few of the classes."""
    sampler = WindowedEpochSampler(train_ds.shard_of, window=cfg.shuffle_window, shuffle=True, seed=cfg.seed,
                                   rank=info.rank, world_size=info.world_size)
    coverage = window_class_coverage(sampler, train_ds.labels)
    if coverage < 0.5:
        log.warning("a shuffle window of %d shards holds %.0f%% of the classes on average (was the manifest sorted "
                    "by class?): batches will see few classes; shuffle the manifest before extracting, or raise "
                    "--shuffle-window (0: all shards)", cfg.shuffle_window, 100 * coverage)
    val_part = None
    if val_ds is not None:
        val_part = (val_ds, WindowedEpochSampler(val_ds.shard_of, window=cfg.shuffle_window, shuffle=False,
                                                 rank=info.rank, world_size=info.world_size, pad=False))
    return sampler, val_part


def run_train_temporal(cfg: TrainTemporalConfig, *, resume: bool = False,
                       preloaded: Optional[Preloaded] = None) -> dict[str, Any]:
    """Train Stage 2 and write the run directory (and OUT/assembled at the end).

    `preloaded`: shared host copies of the caches (from `sfa-cache ablate`), used instead of the
    files. Returns the last epoch's metrics plus `params_trained`, `features` (where they lived)
    and, when assembled, `assembled`.
    """
    train_cache, val_cache = check_inputs(cfg)
    classes = train_cache.classes
    model_cfg = build_model_config(cfg, train_cache)
    if val_cache is not None and val_cache.index.extraction.views.mode != "eval":
        log.warning("the eval cache %s was extracted with --mode train: its views are augmented, so the "
                    "validation numbers are of augmented clips; extract it with --mode eval", val_cache.dir)
    train_ds = CachedFeatureDataset(train_cache, cfg.frames, train=True, seed=cfg.seed)
    val_ds = CachedFeatureDataset(val_cache, cfg.frames, train=False) if val_cache else None
    torch.manual_seed(cfg.seed)
    model = ViViTFE(model_cfg, with_spatial=False)
    if cfg.temporal_init == "stage1":
        init_from_stage1(model, cfg.stage1, classes)
    resuming = claim_run_dir(cfg.out, kind="stage2", train_config=config_to_dict(cfg), resume=resume,
                             runtime_keys=TRAIN_TEMPORAL_RUNTIME_KEYS)

    out = Path(cfg.out)
    info, device = start_processes(cfg.device)
    model.to(device)
    sampler, val_part = _epoch_samplers(cfg, train_ds, val_ds, info)
    feeds = make_feeds((train_ds, sampler), val_part, requested=cfg.cache_in_memory,
                       batch_size=cfg.optim.batch_size, num_workers=cfg.num_workers, device=device,
                       step_bytes=step_bytes(model_cfg, cfg, device), preloaded=preloaded)
    loader, val_loader = feeds.train, feeds.val
    trainer = Trainer(
        model, cfg.optim, steps_per_epoch=len(loader), num_classes=len(classes), device=device, seed=cfg.seed
    )
    record = RunRecord(
        kind="stage2", model=model.cfg, train=config_to_dict(cfg), fingerprint=train_cache.fingerprint,
        caches={"train": str(train_cache.dir.resolve()), "val": str(val_cache.dir.resolve()) if val_cache else None},
        spatial_source=SpatialSource(run=str(Path(cfg.stage1).resolve())) if cfg.stage1 else train_cache.index.source,
        skipped_clips={"train": train_ds.skipped, "val": val_ds.skipped if val_ds else 0},
    )
    begin_run(trainer, out, resuming=resuming, classes=classes, allow_world_size_change=cfg.allow_world_size_change,
              record=record)
    params = trainable_count(model.parameters())
    log.info("Stage 2: %d trainable parameters (adapter %s + temporal), %d frames, %d train clips (%d skipped)",
             params, cfg.adapter, cfg.frames, len(train_ds), train_ds.skipped)
    last = fit_tracked(trainer, out, log=cfg.log, config=config_to_dict(cfg), resuming=resuming,
                       train_loader=loader, train_sampler=sampler, val_loader=val_loader, log_every=cfg.log_every,
                       stop_after=cfg.stop_after)
    result = {**last, "params_trained": params, "features": feeds.placement}
    if last["complete"] and cfg.assemble and info.is_main:
        result["assembled"] = str(assemble(out, out / ASSEMBLED_DIR))
    barrier()
    return result
