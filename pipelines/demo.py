"""`sfa-cache demo`: the paper's Table 1 in miniature on synthetic data, compared by cost.

Per seed (WORKDIR/seed-<s>/), in fresh processes, each phase recorded in phases.json when it
finishes (a rerun reuses it):

    data            the synthetic dataset (make-synthetic defaults, this seed)
    image           a stand-in image checkpoint: the ViT pre-trained on single synthetic frames
    stage1          SFA Stage 1: the whole ViViT-FE at 8 frames from the image checkpoint
    extract-stage1  the Stage-1 spatial ViT's features at F frames: train (2 views) and val caches
    extract-image   the image checkpoint's features at F frames: the same two caches
    <row>           every other row of `demo_rows` (Stage-2 rows on their cache, the baseline on
                    raw video) until validation top-1 stops improving (patience) or an epoch cap
    evaluate        every row's model on the raw validation videos

Then `demo_report` writes results.md, results.json, results.png and cost.png in WORKDIR.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from sfa_cache.atomic import atomic_write_json
from sfa_cache.configs import config_to_dict
from sfa_cache.data.synthetic import SyntheticConfig, make_synthetic
from sfa_cache.errors import SfaError
from sfa_cache.fresh_process import run_in_fresh_process
from sfa_cache.pipelines.demo_report import write_report
from sfa_cache.pipelines.demo_rows import Row, demo_rows, seed_dir
from sfa_cache.pipelines.job_configs import (
    DemoConfig,
    EvaluateConfig,
    ExtractConfig,
    resolve_stage1_config,
    resolve_train_temporal_config,
)
from sfa_cache.runtime import resolve_device, runs_bf16_fast
from sfa_cache.train.image_pretrain import ImagePretrainConfig, pretrain_on_synthetic_frames

log = logging.getLogger("sfa_cache")
PHASES_FILE = "phases.json"
SETTINGS_FILE = "demo.json"
IMAGE_WEIGHTS = "image-weights.safetensors"


# --- phases (each runs in its own process and returns a small JSON-able dict) ------------------

def _phase_data(cfg: DemoConfig, work: Path, seed: int) -> dict[str, Any]:
    syn = SyntheticConfig(train_per_class=cfg.train_per_class, val_per_class=cfg.val_per_class, seed=seed)
    return {k: str(v) for k, v in make_synthetic(work / "data", syn).items()}


def _phase_image(cfg: DemoConfig, work: Path, seed: int) -> dict[str, Any]:
    pre = ImagePretrainConfig(backbone=cfg.backbone, image_size=cfg.image_size, steps=cfg.pretrain_steps, seed=seed,
                              amp=cfg.amp)
    return pretrain_on_synthetic_frames(pre, work / IMAGE_WEIGHTS, resolve_device(cfg.device))


def _phase_video(cfg: DemoConfig, work: Path, seed: int, row: Row) -> dict[str, Any]:
    """The whole model on raw video: Stage 1 (fixed epochs) or the baseline (until patience or its cap)."""
    from sfa_cache.pipelines.stage1 import run_stage1

    if row.key == "stage1":
        budget: dict[str, Any] = dict(epochs=cfg.epochs, lr=cfg.lr)
    else:
        budget = dict(epochs=cfg.baseline_max_epochs, patience=cfg.patience, lr=cfg.baseline_lr)
    s1 = resolve_stage1_config(
        dict(
            train_manifest=str(work / "data" / "train.csv"),
            val_manifest=str(work / "data" / "val.csv"),
            out=str(work / row.key),
            backbone=cfg.backbone,
            image_size=cfg.image_size,
            backbone_weights=str(work / IMAGE_WEIGHTS),
            frames=row.frames,
            flip_prob=0.0,
            color_jitter_prob=cfg.color_jitter_prob,
            temporal_depth=cfg.temporal_depth,
            temporal_pos_std=cfg.temporal_pos_std,
            batch_size=cfg.batch_size,
            optimizer="adamw",
            spatial_lr_scale=cfg.spatial_lr_scale,
            warmup_epochs=1,
            weight_decay=0.05,
            num_workers=cfg.num_workers,
            amp=cfg.amp,
            device=cfg.device,
            seed=seed,
            log_every=0,
            **budget,
        )
    )
    return run_stage1(s1, resume=(work / row.key / "config.json").is_file())


def _phase_extract(cfg: DemoConfig, work: Path, seed: int, source: str) -> dict[str, Any]:
    """Train (2 augmented views) and val caches at F frames of the Stage-1 ViT or the image checkpoint."""
    from sfa_cache.pipelines.extract import run_extract

    model = dict(model=str(work / "stage1")) if source == "stage1" else dict(
        backbone=cfg.backbone, backbone_weights=str(work / IMAGE_WEIGHTS), image_size=cfg.image_size)
    common = dict(
        cache_root=str(work / "caches"),
        frames=cfg.frames,
        flip_prob=0.0,
        color_jitter_prob=cfg.color_jitter_prob,
        num_workers=cfg.num_workers,
        amp=cfg.amp,
        device=cfg.device,
        seed=seed,
        **model,
    )
    train = run_extract(ExtractConfig(manifest=str(work / "data" / "train.csv"), views=2, **common))
    val = run_extract(ExtractConfig(manifest=str(work / "data" / "val.csv"), mode="eval", **common))
    return {"train": str(train.cache_dir), "val": str(val.cache_dir), "train_seconds": train.seconds}


def _phase_stage2(cfg: DemoConfig, work: Path, seed: int, row: Row) -> dict[str, Any]:
    from sfa_cache.pipelines.train_temporal import run_train_temporal

    caches = _phases(work)[f"extract-{row.cache}"]["result"]
    if row.cache == "stage1":  # the temporal architecture (and for V its weights) come from the Stage-1 run
        model: dict[str, Any] = dict(stage1=str(work / "stage1"))
    else:  # no Stage-1 run: the same temporal architecture, built here
        model = dict(temporal_depth=cfg.temporal_depth, temporal_pos_std=cfg.temporal_pos_std)
    s2 = resolve_train_temporal_config(dict(
        train_cache=caches["train"], val_cache=caches["val"], out=str(work / row.key), temporal_init=row.temporal_init,
        adapter=row.adapter, frames=row.frames, epochs=cfg.stage2_max_epochs, patience=cfg.patience, optimizer="adamw",
        lr=cfg.stage2_lr, warmup_epochs=1, weight_decay=0.05, batch_size=cfg.stage2_batch_size,
        amp=cfg.amp, num_workers=cfg.num_workers, device=cfg.device, seed=seed, log_every=0, **model))
    return run_train_temporal(s2, resume=(work / row.key / "config.json").is_file())


def _phase_evaluate(cfg: DemoConfig, work: Path, seed: int, rows: list[Row]) -> dict[str, Any]:
    from sfa_cache.pipelines.evaluate import run_evaluate

    out = {}
    for row in rows:
        metrics = run_evaluate(
            EvaluateConfig(
                run=str(work / row.model_dir),
                manifest=str(work / "data" / "val.csv"),
                num_workers=cfg.num_workers,
                amp=cfg.amp,
                device=cfg.device,
                out=str(work / "eval" / row.key),
            )
        )
        out[row.key] = {k: metrics[k] for k in ("top1", "top5", "per_class_top1", "frames", "videos", "failed")}
    return out


def _phases(work: Path) -> dict[str, Any]:
    path = work / PHASES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _run_phase(work: Path, name: str, fn: Callable[..., dict[str, Any]], cfg: DemoConfig, *args: Any) -> dict[str, Any]:
    """Run `fn(cfg, work, *args)` in a spawned process unless phases.json says it is done; record time and memory."""
    phases = _phases(work)
    if name in phases:
        log.info("demo %s: %s done already (%.0f s), reused", work.name, name, phases[name]["seconds"])
        return phases[name]
    log.info("demo %s: %s ...", work.name, name)
    t0 = time.perf_counter()
    run = run_in_fresh_process(fn, cfg, work, *args, device=resolve_device(cfg.device), name=f"demo phase {name}")
    phases[name] = {"seconds": round(time.perf_counter() - t0, 1), "peak_mem_mb": round(run.peak_bytes / 2**20, 1),
                    "result": json.loads(json.dumps(run.result, default=str))}
    atomic_write_json(work / PHASES_FILE, phases)
    return phases[name]


def run_seed(cfg: DemoConfig, work: Path, seed: int) -> dict[str, Any]:
    """Every phase of one seed in `work`; returns phases.json."""
    work.mkdir(parents=True, exist_ok=True)
    rows = demo_rows(cfg)
    _run_phase(work, "data", _phase_data, cfg, seed)
    _run_phase(work, "image", _phase_image, cfg, seed)
    _run_phase(work, "stage1", _phase_video, cfg, seed, next(r for r in rows if r.key == "stage1"))
    for source in ("stage1", "image"):
        _run_phase(work, f"extract-{source}", _phase_extract, cfg, seed, source)
    for row in rows:
        if row.cache:
            _run_phase(work, row.key, _phase_stage2, cfg, seed, row)
    _run_phase(work, "baseline", _phase_video, cfg, seed, next(r for r in rows if r.key == "baseline"))
    _run_phase(work, "evaluate", _phase_evaluate, cfg, seed, rows)
    return _phases(work)


def run_demo(cfg: DemoConfig) -> str:
    """Run (or finish) every phase of every seed in `cfg.workdir`; write and return the report."""
    cfg.validate()
    if cfg.amp == "auto":  # resolved once, so demo.json says what every phase ran with
        cfg = dataclasses.replace(cfg, amp="bf16" if runs_bf16_fast(resolve_device(cfg.device)) else "none")
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # More seeds later reuse the finished ones; any other change needs another folder.
    settings = {k: v for k, v in json.loads(json.dumps(config_to_dict(cfg))).items() if k != "seeds"}
    settings_file = work / SETTINGS_FILE
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise SfaError(f"{work} holds a demo run with other settings; use another --workdir")
    atomic_write_json(settings_file, settings)
    per_seed = {seed: run_seed(cfg, seed_dir(work, seed), seed) for seed in cfg.seed_list}
    return write_report(work, cfg, demo_rows(cfg), per_seed)
