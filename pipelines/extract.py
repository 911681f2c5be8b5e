"""`sfa-cache extract`: run the frozen spatial transformer once per clip into a feature cache.

This module picks the model and the videos and describes the job; `CacheBuilder` owns the rest
(the content key and folder `CACHE_ROOT/<input>-<mode>-<frames>f-<key>`, reuse of a finished
cache, resume of an interrupted one, the per-shard protocol, cache.json written last) and
`ShardExtractor` decodes, encodes and fills the shards. Under torchrun, rank r of N extracts
shards r, r+N, ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sfa_cache.cache.extraction.builder import CacheBuilder
from sfa_cache.cache.extraction.extractor import ExtractorConfig, ShardExtractor
from sfa_cache.cache.format.index import CachedSpatial, CacheIndex, ExtractionSettings, ManifestInfo, ViewSettings
from sfa_cache.data.failures import FAILURES_FILE, read_failures
from sfa_cache.data.inputs import describe_input, input_name, read_input
from sfa_cache.data.manifest import Manifest, manifest_digest, read_classes_file
from sfa_cache.distributed import DistInfo, init_distributed, rank_device, shutdown_distributed
from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig, SpatialSource
from sfa_cache.models.fingerprint import preprocessing, spatial_fingerprint
from sfa_cache.models.spatial import SpatialTransformer, build_backbone_spatial
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.run.record import read_run_record
from sfa_cache.run.weights import load_spatial
from sfa_cache.runtime import library_versions, resolve_amp
from sfa_cache.settings_io import config_to_dict
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.reader import check_decoder
from sfa_cache.video.transforms import AugmentConfig

log = logging.getLogger("sfa_cache")


@dataclass
class ExtractResult:
    cache_dir: Path
    reused: bool
    clips: int
    valid: int
    failed: int
    shards: int
    shards_extracted: int = 0
    seconds: float = 0.0
    frames_per_second: float = 0.0
    model_busy: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        keys = ("reused", "clips", "valid", "failed", "shards", "shards_extracted")
        out = {"cache": str(self.cache_dir), **{k: getattr(self, k) for k in keys}}
        if self.shards_extracted:
            out.update(seconds=round(self.seconds, 2), frames_per_second=round(self.frames_per_second, 1),
                       model_busy=round(self.model_busy, 3))
        return out

    @classmethod
    def of_cache(cls, cache_dir: Path, index: CacheIndex, *, reused: bool) -> ExtractResult:
        return cls(cache_dir, reused, index.num_clips, index.valid_clips, index.failed_clips, len(index.shards),
                   failures=read_failures(cache_dir / FAILURES_FILE))


def load_source(cfg: ExtractConfig) -> tuple[SpatialTransformer, SpatialConfig, SpatialSource, Optional[list[str]]]:
    """The spatial model, its resolved config, where it came from, and the source's class list
    (None for a bare backbone)."""
    if cfg.model is not None:
        spatial, scfg = load_spatial(cfg.model)
        record = read_run_record(cfg.model)
        return (
            spatial,
            scfg,
            SpatialSource(run=str(Path(cfg.model).resolve()), kind=record.kind),
            record.classes or None,
        )
    spatial, scfg = build_backbone_spatial(cfg.backbone, cfg.image_size, weights=cfg.backbone_weights,
                                           pretrained=cfg.pretrained, seed=cfg.seed)
    if not (cfg.backbone_weights or cfg.pretrained):
        log.warning("the backbone %s has random weights (no --backbone-weights / --pretrained)", cfg.backbone)
    weights = (
        str(Path(cfg.backbone_weights).resolve())
        if cfg.backbone_weights
        else ("timm-hub" if cfg.pretrained else "random")
    )
    return (
        spatial,
        scfg,
        SpatialSource(backbone=cfg.backbone, image_size=cfg.image_size, seed=cfg.seed, weights=weights),
        None,
    )


def describe_job(cfg: ExtractConfig, spatial: SpatialTransformer, scfg: SpatialConfig, source: SpatialSource,
                 manifest: Manifest, spec: ClipSpec, amp: str) -> CacheIndex:
    """The cache's index before extraction (extract.json): what is cached, from what, how."""
    if spec.train:
        views = ViewSettings("train", spec.num_views, seed=cfg.seed, augment=config_to_dict(spec.augment))
    else:
        views = ViewSettings("eval", spec.num_views, crops=spec.crops)
    return CacheIndex(
        fingerprint=spatial_fingerprint(spatial.backbone.state_dict(), scfg),
        spatial=CachedSpatial(scfg.backbone, scfg.image_size, tuple(scfg.mean), tuple(scfg.std)),
        preprocessing=preprocessing(scfg), source=source,
        extraction=ExtractionSettings(frames=spec.frames, views=views, dtype=cfg.dtype, amp=amp, decoder=cfg.backend,
                                      compressor=cfg.compressor, clips_per_shard=cfg.clips_per_shard,
                                      transport="uint8"),
        views=spec.num_views, frames=spec.frames, dim=spatial.embed_dim, dtype=cfg.dtype, classes=manifest.classes,
        manifest=ManifestInfo(**describe_input(manifest), split=cfg.split, rows=[e.row for e in manifest.entries],
                              digest=manifest_digest(manifest)),
        versions=library_versions(),
    )


def run_extract(cfg: ExtractConfig, *, engine: type[ShardExtractor] = ShardExtractor) -> ExtractResult:
    """Extract (or reuse, or resume) the cache for `cfg`. Returns what happened.

    `engine`: the extraction engine's class; a subclass changes how clips travel or are encoded
    (benchmarks/extract_throughput.py compares a float32 transport this way)."""
    cfg.validate()
    info = init_distributed("gloo")  # only barriers cross ranks: gloo serves CPU and GPU jobs
    try:
        return _check_strict(cfg, _extract(cfg, info, engine))
    finally:
        shutdown_distributed()


def _extract(cfg: ExtractConfig, info: DistInfo, engine_class: type[ShardExtractor]) -> ExtractResult:
    spatial, scfg, source, source_classes = load_source(cfg)
    manifest = read_input(cfg.manifest, read_classes_file(cfg.classes) if cfg.classes else source_classes, cfg.root,
                          cfg.split)
    check_decoder(cfg.backend, [e.path for e in manifest.entries])
    device = rank_device(cfg.device, info)
    amp = resolve_amp(cfg.amp, device)
    train = cfg.mode == "train"
    spec = ClipSpec(
        frames=cfg.frames,
        image_size=scfg.image_size,
        mean=tuple(scfg.mean),
        std=tuple(scfg.std),
        train=train,
        backend=cfg.backend,
        augment=AugmentConfig(color_jitter_prob=cfg.color_jitter_prob, flip_prob=cfg.flip_prob,
                          randaugment_ops=cfg.randaugment_ops, randaugment_magnitude=cfg.randaugment_magnitude),
        views=cfg.views if train else 1,
        crops=1 if train else cfg.eval_crops,
    )
    job = describe_job(cfg, spatial, scfg, source, manifest, spec, amp)
    name = input_name(cfg.manifest) + (f"-{cfg.split}" if cfg.split else "")
    builder = CacheBuilder(cfg.cache_root, name, job, num_clips=len(manifest), dist=info)
    with builder:
        if builder.reused:
            return ExtractResult.of_cache(builder.dir, builder.index, reused=True)
        engine_cfg = ExtractorConfig(dtype=cfg.dtype, amp=amp, batch_frames=cfg.batch_frames, workers=cfg.num_workers,
                                     decode_timeout=cfg.decode_timeout or None, progress=cfg.progress and info.is_main)
        engine = engine_class(spatial.backbone, device, spec, engine_cfg, write=builder.write_shard, seed=cfg.seed,
                              failure_log=builder.dir / FAILURES_FILE)
        stats = engine.run(builder.todo, manifest.entries)
    if builder.index is None:  # another rank than 0: its own part
        return ExtractResult(
            builder.dir, False, stats.clips, stats.valid, len(stats.failures), len(builder.todo), len(builder.todo),
            stats.seconds, stats.frames_per_second, stats.model_busy, stats.failures,
        )
    result = ExtractResult.of_cache(builder.dir, builder.index, reused=False)
    result.shards_extracted = len(builder.todo)
    result.seconds, result.frames_per_second, result.model_busy = (
        stats.seconds,
        stats.frames_per_second,
        stats.model_busy,
    )
    return result


def _check_strict(cfg: ExtractConfig, result: ExtractResult) -> ExtractResult:
    if cfg.strict and result.failed:
        first = result.failures[0] if result.failures else {}
        raise SfaError(f"{result.failed} clip(s) failed to decode (--strict); first: {first.get('path')}: "
                       f"{first.get('reason')}; see {result.cache_dir / FAILURES_FILE}")
    return result
