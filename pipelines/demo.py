"""`sfa-cache demo`: the paper's Table 1 in miniature on synthetic data, compared by cost.

First, in WORKDIR, once for every seed (the paper's ImageNet checkpoint is one checkpoint too):

    image           the stand-in image checkpoint (`--checkpoint generic` or `aligned`, seed `--seed`)

Then per seed (WORKDIR/seed-<s>/), in fresh processes, each phase recorded in phases.json when it
finishes (a rerun reuses it):

    data            the synthetic dataset (train / val / test, this seed)
    stage1          SFA Stage 1: the whole ViViT-FE at 8 frames from the image checkpoint
    probe           what the frozen per-frame features encode (linear probes on video frames)
    extract-stage1  the Stage-1 spatial ViT's features at F frames: train (2 views) and val caches
    extract-image   the image checkpoint's features at F frames: the same two caches
    <row>           every other row of `demo_rows` (Stage-2 rows on their cache, the baseline on
                    raw video)
    evaluate        every row's kept model on the raw test videos

Every row trains until neither validation top-1 nor loss improves (patience) or its cap; its best epoch by
validation top-1 is kept. A row whose kept model never predicts some class right on the
validation videos has stalled (an optimisation failure, not a converged result): it is trained
again from another seed (`attempt_seed`, at most `--restarts` times), and if it stalls again it is
reported as stalled and no verdict is read from it. Selection uses `val`; every reported top-1 is on `test`.

Then `demo_report` writes results.md, results.json, results.png and cost.png in WORKDIR.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sfa_cache.atomic import atomic_write_json
from sfa_cache.data.synthetic import SyntheticConfig, make_synthetic
from sfa_cache.errors import SfaError
from sfa_cache.fresh_process import run_in_fresh_process
from sfa_cache.pipelines.demo_config import DemoConfig
from sfa_cache.pipelines.demo_report import write_report
from sfa_cache.pipelines.demo_rows import Row, demo_rows, seed_dir
from sfa_cache.pipelines.job_configs import (
    EvaluateConfig,
    ExtractConfig,
    resolve_stage1_config,
    resolve_train_temporal_config,
)
from sfa_cache.run.copies import BEST_DIR
from sfa_cache.run.record import holds_run
from sfa_cache.runtime import resolve_amp, resolve_device
from sfa_cache.settings_io import config_to_dict
from sfa_cache.train.image_pretrain import ImagePretrainConfig, pretrain_on_synthetic_frames

log = logging.getLogger("sfa_cache")
PHASES_FILE = "phases.json"
SETTINGS_FILE = "demo.json"
IMAGE_WEIGHTS = "image-weights.safetensors"
BEST_ASSEMBLED = "best-assembled"  # a Stage-2 row's best epoch as an end-to-end model
PROBE_CLIPS, PROBE_FRAMES_PER_CLIP, PROBE_FIT = 500, 8, 3000  # 4,000 frames: 3,000 to fit, 1,000 to score


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of a row's attempt: the seed itself, then (after a stall) another initialisation and data order."""
    return seed + 1000 * attempt


# --- phases (each runs in its own process and returns a small JSON-able dict) ------------------

def _phase_data(cfg: DemoConfig, work: Path, seed: int) -> dict[str, Any]:
    syn = SyntheticConfig(train_per_class=cfg.train_per_class, val_per_class=cfg.val_per_class,
                          test_per_class=cfg.test_per_class, seed=seed)
    return {k: str(v) for k, v in make_synthetic(work / "data", syn).items()}


def image_weights(cfg: DemoConfig) -> Path:
    """The stand-in image checkpoint every seed starts from (WORKDIR/image-weights.safetensors)."""
    return Path(cfg.workdir) / IMAGE_WEIGHTS


def _phase_image(cfg: DemoConfig, work: Path, seed: int) -> dict[str, Any]:
    pre = ImagePretrainConfig(task=cfg.checkpoint, backbone=cfg.backbone, image_size=cfg.image_size,
                              steps=cfg.image_steps, seed=seed, amp=cfg.amp)
    return pretrain_on_synthetic_frames(pre, image_weights(cfg), resolve_device(cfg.device))


def _train_video(cfg: DemoConfig, work: Path, seed: int, row: Row, out: Path) -> dict[str, Any]:
    """The whole model on raw video: Stage 1 at 8 frames, or the baseline at F."""
    from sfa_cache.pipelines.stage1 import run_stage1

    stage1 = row.key == "stage1"
    s1 = resolve_stage1_config(dict(
        train_manifest=str(work / "data" / "train.csv"), val_manifest=str(work / "data" / "val.csv"), out=str(out),
        backbone=cfg.backbone, image_size=cfg.image_size, backbone_weights=str(image_weights(cfg)),
        frames=row.frames, flip_prob=0.0, color_jitter_prob=cfg.color_jitter_prob, temporal_depth=cfg.temporal_depth,
        temporal_pos_std=cfg.temporal_pos_std, batch_size=cfg.batch_size, optimizer="adamw",
        spatial_lr_scale=cfg.spatial_lr_scale, warmup_epochs=1, weight_decay=0.05, num_workers=cfg.num_workers,
        amp=cfg.amp, device=cfg.device, seed=seed, log_every=0, patience=cfg.patience,
        epochs=cfg.stage1_max_epochs if stage1 else cfg.baseline_max_epochs, lr=cfg.lr if stage1 else cfg.baseline_lr,
    ))
    return run_stage1(s1, resume=holds_run(out))


def _train_stage2(cfg: DemoConfig, work: Path, seed: int, row: Row, out: Path) -> dict[str, Any]:
    from sfa_cache.pipelines.train_temporal import run_train_temporal

    caches = _phases(work)[f"extract-{row.cache}"]["result"]
    if row.cache == "stage1":  # the temporal architecture (and for V its weights) come from the Stage-1 run
        model: dict[str, Any] = dict(stage1=str(stage1_model(work)))
    else:  # no Stage-1 run: the same temporal architecture, built here
        model = dict(temporal_depth=cfg.temporal_depth, temporal_pos_std=cfg.temporal_pos_std)
    s2 = resolve_train_temporal_config(dict(
        train_cache=caches["train"], val_cache=caches["val"], out=str(out), temporal_init=row.temporal_init,
        adapter=row.adapter, frames=row.frames, epochs=cfg.stage2_max_epochs, patience=cfg.patience, optimizer="adamw",
        lr=cfg.stage2_lr, warmup_epochs=1, weight_decay=0.05, batch_size=cfg.stage2_batch_size, assemble=False,
        amp=cfg.amp, num_workers=cfg.num_workers, device=cfg.device, seed=seed, log_every=0, **model))
    return run_train_temporal(s2, resume=holds_run(out))


def kept_model(work: Path, run: str, row: Row) -> Path:
    """The end-to-end model of a row's kept (best) epoch, assembled for a Stage-2 row."""
    return work / run / (BEST_ASSEMBLED if row.cache else BEST_DIR)


def _evaluate(cfg: DemoConfig, model: Path, manifest: Path, out: Path) -> dict[str, Any]:
    from sfa_cache.pipelines.evaluate import run_evaluate

    metrics = run_evaluate(EvaluateConfig(run=str(model), manifest=str(manifest), num_workers=cfg.num_workers,
                                          amp=cfg.amp, device=cfg.device, out=str(out)))
    return {k: metrics[k] for k in ("top1", "top5", "per_class_top1", "frames", "videos", "failed")}


def _phase_row(cfg: DemoConfig, work: Path, seed: int, row: Row) -> dict[str, Any]:
    """Train `row` (restarted once from `restart_seed` if it stalls), keep its best epoch and
    check it on the validation videos; returns the kept run, its attempts and its training result."""
    from sfa_cache.pipelines.assemble import assemble

    attempts = []
    for attempt in range(cfg.restarts + 1):
        run, train_seed = row.key if attempt == 0 else f"{row.key}-restart{attempt}", attempt_seed(seed, attempt)
        train = _train_stage2 if row.cache else _train_video
        result = train(cfg, work, train_seed, row, work / run)
        if row.cache:
            assemble(work / run / BEST_DIR, kept_model(work, run, row))
        val = _evaluate(cfg, kept_model(work, run, row), work / "data" / "val.csv", work / "eval" / "val" / run)
        unlearnt = sorted(c for c, top1 in val["per_class_top1"].items() if top1 == 0)
        attempts.append({"run": run, "seed": train_seed, "val_top1": val["top1"], "unlearnt": unlearnt,
                         "stopped_early": bool(result.get("stopped_early"))})
        if not unlearnt:
            break
        log.warning("demo %s: %s stalled (never right on the validation videos of %s); %s", work.name, run,
                    ", ".join(unlearnt), "reported as stalled" if attempt == cfg.restarts else "restarting")
    # The attempt that did not stall, or, when every one did, the best of them on validation.
    kept = attempts[-1] if not attempts[-1]["unlearnt"] else max(attempts, key=lambda a: a["val_top1"])
    return {"run": kept["run"], "stalled": bool(kept["unlearnt"]), "attempts": attempts,
            "stopped_early": kept["stopped_early"]}


def stage1_model(work: Path) -> Path:
    """The kept Stage-1 model (its best epoch): what SFA freezes, caches and initialises from."""
    return work / _phases(work)["stage1"]["result"]["run"] / BEST_DIR


def _phase_extract(cfg: DemoConfig, work: Path, seed: int, source: str) -> dict[str, Any]:
    """Train (2 augmented views) and val caches at F frames of the Stage-1 ViT or the image checkpoint."""
    from sfa_cache.pipelines.extract import run_extract

    model = dict(model=str(stage1_model(work))) if source == "stage1" else dict(
        backbone=cfg.backbone, backbone_weights=str(image_weights(cfg)), image_size=cfg.image_size)
    common = dict(cache_root=str(work / "caches"), frames=cfg.frames, flip_prob=0.0,
                  color_jitter_prob=cfg.color_jitter_prob, num_workers=cfg.num_workers, amp=cfg.amp,
                  device=cfg.device, seed=seed, **model)
    train = run_extract(ExtractConfig(manifest=str(work / "data" / "train.csv"), views=2, **common))
    val = run_extract(ExtractConfig(manifest=str(work / "data" / "val.csv"), mode="eval", **common))
    return {"train": str(train.cache_dir), "val": str(val.cache_dir), "train_seconds": train.seconds}


def _phase_probe(cfg: DemoConfig, work: Path, seed: int) -> dict[str, Any]:
    """Linear probes of "which cell" and "lit" on frozen per-frame features of video frames, for
    random weights, the image checkpoint and the Stage-1 spatial ViT (docs/demo.md's premise table)."""
    import torch

    from sfa_cache.data.synthetic_images import video_frame_cues
    from sfa_cache.models.spatial import build_backbone_spatial
    from sfa_cache.run.weights import load_spatial
    from sfa_cache.train.probe import frame_tokens, linear_probe

    device = resolve_device(cfg.device)
    frames, cell, lit = video_frame_cues(PROBE_CLIPS, PROBE_FRAMES_PER_CLIP, SyntheticConfig(),
                                         np.random.default_rng([seed, 0x9B0BE]))
    cues = {"cell": torch.from_numpy(cell), "lit": torch.from_numpy(lit)}
    models = {
        "random weights": build_backbone_spatial(cfg.backbone, cfg.image_size, seed=seed),
        f"{cfg.checkpoint} image checkpoint": build_backbone_spatial(cfg.backbone, cfg.image_size,
                                                                     weights=str(image_weights(cfg))),
        "Stage-1 spatial ViT": load_spatial(stage1_model(work)),
    }
    out: dict[str, Any] = {"frames_fit": PROBE_FIT, "frames_scored": len(frames) - PROBE_FIT,
                           "majority": {k: 100.0 * float(v[PROBE_FIT:].bincount().max()) / (len(v) - PROBE_FIT)
                                        for k, v in cues.items()}}
    for name, (spatial, scfg) in models.items():
        tokens = frame_tokens(spatial.backbone.to(device), frames, scfg.image_size, scfg.mean, scfg.std, device,
                              cfg.amp)
        out[name] = {k: linear_probe(tokens[:PROBE_FIT], y[:PROBE_FIT], tokens[PROBE_FIT:], y[PROBE_FIT:])
                     for k, y in cues.items()}
    return out


def _phase_evaluate(cfg: DemoConfig, work: Path, seed: int, rows: list[Row]) -> dict[str, Any]:
    """Every row's kept model on the raw test videos (never used to choose anything)."""
    phases = _phases(work)
    out = {}
    for row in rows:
        run = phases[row.key]["result"]["run"]
        out[row.key] = _evaluate(cfg, kept_model(work, run, row), work / "data" / "test.csv",
                                 work / "eval" / "test" / run)
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
    _run_phase(work, "stage1", _phase_row, cfg, seed, next(r for r in rows if r.key == "stage1"))
    _run_phase(work, "probe", _phase_probe, cfg, seed)
    for source in ("stage1", "image"):
        _run_phase(work, f"extract-{source}", _phase_extract, cfg, seed, source)
    for row in rows:
        if row.cache:
            _run_phase(work, row.key, _phase_row, cfg, seed, row)
    _run_phase(work, "baseline", _phase_row, cfg, seed, next(r for r in rows if r.key == "baseline"))
    _run_phase(work, "evaluate", _phase_evaluate, cfg, seed, rows)
    return _phases(work)


def run_demo(cfg: DemoConfig) -> str:
    """Run (or finish) every phase of every seed in `cfg.workdir`; write and return the report."""
    cfg.validate()
    if cfg.amp == "auto":  # resolved once, so demo.json says what every phase ran with
        cfg = dataclasses.replace(cfg, amp=resolve_amp(cfg.amp, resolve_device(cfg.device), bf16_on_cpu=True))
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # More seeds later reuse the finished ones; any other change needs another folder.
    settings = {k: v for k, v in json.loads(json.dumps(config_to_dict(cfg))).items() if k != "seeds"}
    settings_file = work / SETTINGS_FILE
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise SfaError(f"{work} holds a demo run with other settings; use another --workdir")
    atomic_write_json(settings_file, settings)
    image = _run_phase(work, "image", _phase_image, cfg, cfg.seed)
    per_seed = {seed: run_seed(cfg, seed_dir(work, seed), seed) for seed in cfg.seed_list}
    return write_report(work, cfg, demo_rows(cfg), per_seed, image)
