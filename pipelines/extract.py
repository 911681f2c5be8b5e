"""`sfa-cache extract`: run the frozen spatial transformer once per clip into a feature cache.

The cache lands in `CACHE_ROOT/<manifest>-<mode>-<frames>f-<key>`, where the key hashes the
spatial fingerprint, every setting that changes the cached values or layout, and the manifest's
content. The same command again finds the same folder: a finished cache is reused, an
interrupted one is resumed (shards with a valid marker are kept, the rest are redone).
Under torchrun, rank r of N extracts shards r, r+N, ... and rank 0 writes cache.json last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.cache import layout
from sfa_cache.cache.extractor import ExtractorConfig, ShardExtractor
from sfa_cache.models.fingerprint import preprocessing, spatial_fingerprint
from sfa_cache.cache.views import ViewSpec
from sfa_cache.configs import config_to_dict
from sfa_cache.data.failures import read_failures
from sfa_cache.data.inputs import describe_input, input_name, read_input
from sfa_cache.data.manifest import manifest_digest, read_classes_file
from sfa_cache.distributed import DistInfo, barrier, init_distributed, rank_device, shutdown_distributed
from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig
from sfa_cache.models.sources import build_backbone_spatial
from sfa_cache.models.spatial import SpatialTransformer
from sfa_cache.models.vivit import load_spatial
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.runtime import check_amp
from sfa_cache.train.run_dir import library_versions, read_run_config
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


def load_source(cfg: ExtractConfig) -> tuple[SpatialTransformer, SpatialConfig, dict[str, Any], Optional[list[str]]]:
    """The spatial model, its resolved config, a description of where it came from, and the
    source's class list (None for a bare backbone)."""
    if cfg.model is not None:
        spatial, scfg = load_spatial(cfg.model)
        run_cfg = read_run_config(cfg.model)
        return spatial, scfg, {"run": str(Path(cfg.model).resolve()), "kind": run_cfg.get("kind")}, run_cfg.get("classes")
    spatial, scfg = build_backbone_spatial(cfg.backbone, cfg.image_size, weights=cfg.backbone_weights,
                                           pretrained=cfg.pretrained, seed=cfg.seed)
    if not (cfg.backbone_weights or cfg.pretrained):
        log.warning("the backbone %s has random weights (no --backbone-weights / --pretrained)", cfg.backbone)
    source = {"backbone": cfg.backbone, "image_size": cfg.image_size, "seed": cfg.seed,
              "weights": str(Path(cfg.backbone_weights).resolve()) if cfg.backbone_weights else
              ("timm-hub" if cfg.pretrained else "random")}
    return spatial, scfg, source, None


def _resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    check_amp(amp, device)
    return amp


def _settings(cfg: ExtractConfig, spec: ViewSpec, amp: str) -> dict[str, Any]:
    """Every setting that changes the cached values or their layout (part of the cache key)."""
    views: dict[str, Any] = {"mode": spec.mode, "count": spec.num_views, "sampling": "uniform-segment"}
    if spec.mode == "train":
        views.update(seed=spec.seed, augment=config_to_dict(spec.augment))
    else:
        views.update(crops=spec.eval_crops)
    return {"frames": spec.frames, "views": views, "dtype": cfg.dtype, "amp": amp, "decoder": cfg.backend,
            "compressor": cfg.compressor, "clips_per_shard": cfg.clips_per_shard}


def _prepare(cache_dir: Path, job: dict[str, Any]) -> None:
    """Create the cache folder with its job file, or check that an existing one is this job."""
    path = cache_dir / layout.JOB_FILE
    if path.is_file():
        if layout.read_json(path).get("key") != job["key"]:
            raise SfaError(f"{cache_dir} belongs to another extraction (its {layout.JOB_FILE} has another key)")
        return
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise SfaError(f"{cache_dir} exists and is not a cache of this extraction; remove it or choose another --cache-root")
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, job)


def _finish(cache_dir: Path, job: dict[str, Any], shards: list[layout.ShardPlan], num_clips: int) -> dict[str, Any]:
    """Check every marker, rewrite failures.jsonl from them, and write cache.json (last)."""
    markers = [layout.read_marker(cache_dir, s.index, job["key"]) for s in shards]
    missing = [s.index for s, m in zip(shards, markers) if m is None]
    if missing:
        raise SfaError(f"{cache_dir}: shards {missing[:8]} have no completion marker; rerun the same command to finish them")
    failures = [f for m in markers for f in m["failures"]]
    # The live log may hold duplicates from interrupted attempts; the markers are the truth.
    atomic_write_text(cache_dir / layout.FAILURES_FILE, "".join(json.dumps(f) + "\n" for f in failures))
    valid = sum(m["valid"] for m in markers)
    if valid == 0:  # a cache of nothing but NaN helps nobody: not marked complete
        first = failures[0] if failures else {}
        raise SfaError(f"no clip of {job['manifest']['path']} could be decoded ({len(failures)} failures; first: "
                       f"{first.get('path')}: {first.get('reason')}); see {cache_dir / layout.FAILURES_FILE}")
    index = {
        **job,
        "num_clips": num_clips,
        "valid_clips": valid,
        "failed_clips": num_clips - valid,
        "shards": [{"index": s.index, "start": s.start, "stop": s.stop, "checksum": m["checksum"], "valid": m["valid"]}
                   for s, m in zip(shards, markers)],
        "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(cache_dir / layout.CACHE_FILE, index)
    return index


def _reused(cache_dir: Path, key: str) -> ExtractResult:
    index = layout.read_cache_index(cache_dir)
    if index.get("key") != key:
        raise SfaError(f"{cache_dir} holds another cache (key mismatch); remove it or choose another --cache-root")
    failures = read_failures(cache_dir / layout.FAILURES_FILE)
    return ExtractResult(cache_dir, True, index["num_clips"], index["valid_clips"], index["failed_clips"],
                         len(index["shards"]), failures=failures)


def run_extract(cfg: ExtractConfig) -> ExtractResult:
    """Extract (or reuse, or resume) the cache for `cfg`. Returns what happened."""
    cfg.validate()
    info = init_distributed("gloo")  # only barriers cross ranks: gloo serves CPU and GPU jobs
    try:
        return _extract(cfg, info)
    finally:
        shutdown_distributed()


def _extract(cfg: ExtractConfig, info: DistInfo) -> ExtractResult:
    spatial, scfg, source, source_classes = load_source(cfg)
    manifest = read_input(cfg.manifest, read_classes_file(cfg.classes) if cfg.classes else source_classes, cfg.root,
                          cfg.split)
    classes = manifest.classes
    device = rank_device(cfg.device, info)
    amp = _resolve_amp(cfg.amp, device)
    spec = ViewSpec(frames=cfg.frames, image_size=scfg.image_size, mean=tuple(scfg.mean), std=tuple(scfg.std), mode=cfg.mode,
                    views=cfg.views, eval_crops=cfg.eval_crops, seed=cfg.seed,
                    augment=AugmentConfig(color_jitter_prob=cfg.color_jitter_prob, flip_prob=cfg.flip_prob))
    fingerprint = spatial_fingerprint(spatial.backbone.state_dict(), scfg)
    settings = _settings(cfg, spec, amp)
    digest = manifest_digest(manifest)
    key = hashlib.sha256(json.dumps([fingerprint, settings, digest], sort_keys=True).encode()).hexdigest()
    name = input_name(cfg.manifest) + (f"-{cfg.split}" if cfg.split else "")
    cache_dir = Path(cfg.cache_root) / f"{name}-{cfg.mode}-{cfg.frames}f-{key[:12]}"

    shards = layout.plan_shards(len(manifest), cfg.clips_per_shard)
    if (cache_dir / layout.CACHE_FILE).is_file():
        lost = [s.index for s in shards if layout.read_marker(cache_dir, s.index, key) is None]
        if not lost:
            log.info("reusing the finished cache %s (same fingerprint, settings and manifest)", cache_dir)
            return _check_strict(cfg, _reused(cache_dir, key))
        barrier()  # every rank has seen the markers before rank 0 demotes the cache
        if info.is_main:  # markers are the truth: the cache is unfinished again
            log.warning("%s: shard(s) %s lost their completion markers; redoing them", cache_dir, lost[:8])
            (cache_dir / layout.CACHE_FILE).unlink(missing_ok=True)
    job = {
        "format": layout.CACHE_FORMAT, "kind": "feature-cache", "key": key, "fingerprint": fingerprint,
        "spatial": {"backbone": scfg.backbone, "image_size": scfg.image_size, "mean": list(scfg.mean), "std": list(scfg.std)},
        "preprocessing": preprocessing(scfg), "source": source, "extraction": settings,
        "views": spec.num_views, "frames": spec.frames, "dim": spatial.embed_dim, "dtype": cfg.dtype,
        "classes": classes,
        "manifest": {**describe_input(manifest), "split": cfg.split, "rows": [e.row for e in manifest.entries],
                     "digest": digest},
        "versions": library_versions(),
    }
    if info.is_main:
        _prepare(cache_dir, job)
    barrier()

    mine = shards[info.rank :: info.world_size]
    todo = [s for s in mine if layout.read_marker(cache_dir, s.index, key) is None]
    if len(todo) < len(mine):
        log.info("resuming %s: %d of %d shards already complete", cache_dir, len(mine) - len(todo), len(mine))
    elif info.is_main:
        log.info("extracting %d clips x %d view(s) x %d frames into %s", len(manifest), spec.num_views, spec.frames, cache_dir)
    engine_cfg = ExtractorConfig(dtype=cfg.dtype, compressor=cfg.compressor, amp=amp, batch_frames=cfg.batch_frames,
                                 workers=cfg.num_workers, decode_timeout=cfg.decode_timeout or None, backend=cfg.backend,
                                 progress=cfg.progress and info.is_main)
    engine = ShardExtractor(spatial.backbone, device, spec, engine_cfg, cache_dir=cache_dir, key=key,
                            failure_log=cache_dir / layout.FAILURES_FILE)
    with layout.shard_locks(cache_dir, [s.index for s in todo]):
        for s in todo:
            layout.discard_shard(cache_dir, s.index)  # leftovers of an interrupted attempt
        stats = engine.run(todo, manifest.entries)
    barrier()  # every rank's markers are on disk

    if not info.is_main:
        return ExtractResult(cache_dir, False, stats.clips, stats.valid, len(stats.failures), len(todo), len(todo),
                             stats.seconds, stats.frames_per_second, stats.model_busy, stats.failures)
    index = _finish(cache_dir, job, shards, len(manifest))
    result = _reused(cache_dir, key)
    result.reused = False
    result.shards_extracted = len(todo)
    result.seconds, result.frames_per_second, result.model_busy = stats.seconds, stats.frames_per_second, stats.model_busy
    log.info("cache complete: %d clips, %d valid, %d failed -> %s", index["num_clips"], index["valid_clips"],
             index["failed_clips"], cache_dir)
    return _check_strict(cfg, result)


def _check_strict(cfg: ExtractConfig, result: ExtractResult) -> ExtractResult:
    if cfg.strict and result.failed:
        first = result.failures[0] if result.failures else {}
        raise SfaError(f"{result.failed} clip(s) failed to decode (--strict); first: {first.get('path')}: "
                       f"{first.get('reason')}; see {result.cache_dir / layout.FAILURES_FILE}")
    return result
