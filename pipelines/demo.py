"""`sfa-cache demo`: the SFA recipe against conventional training, end to end, on synthetic data.

Phases (each is skipped when a previous run of the demo finished it, so a rerun is quick):

1. `data`      the synthetic dataset (make-synthetic defaults)
2. `image`     a stand-in image checkpoint: the ViT pre-trained on single synthetic frames
3. `stage1`    SFA Stage 1: the whole ViViT-FE at 8 frames
4. `extract`   the Stage-1 spatial features of every clip at F frames, train and val caches
5. `sfa`       SFA Stage 2 on the cache (MLP adapter, temporal initialised from Stage 1)
6. `naive`     the naive ablation on the same cache (no adapter, temporal from scratch)
7. `baseline`  conventional training: the whole ViViT-FE at F frames, the same epochs as Stage 1
8. `evaluate`  every model on the raw validation videos

Each training phase runs in a fresh process, so its peak memory is its own. The result is a
table (printed, and `results.md`) and `results.png` (validation accuracy per epoch, cost).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.configs import config_to_dict
from sfa_cache.runtime import resolve_device
from sfa_cache.data.synthetic import SyntheticConfig, make_synthetic
from sfa_cache.errors import SfaError
from sfa_cache.fresh_process import run_in_fresh_process
from sfa_cache.pipelines.job_configs import (DemoConfig, EvaluateConfig, ExtractConfig, resolve_stage1_config,
                                            resolve_train_temporal_config)
from sfa_cache.plot import curves_and_bars_png
from sfa_cache.report import markdown_table
from sfa_cache.train.image_pretrain import ImagePretrainConfig, pretrain_on_synthetic_frames
from sfa_cache.train.run_dir import read_metrics

log = logging.getLogger("sfa_cache")
PHASES_FILE = "phases.json"



# --- phases (each runs in its own process and returns a small JSON-able dict) ------------------

def _phase_image(cfg: DemoConfig, work: Path) -> dict[str, Any]:
    pre = ImagePretrainConfig(backbone=cfg.backbone, image_size=cfg.image_size, steps=cfg.pretrain_steps, seed=cfg.seed)
    return pretrain_on_synthetic_frames(pre, work / "image-weights.safetensors", resolve_device(cfg.device))


def _phase_stage1(cfg: DemoConfig, work: Path, name: str, frames: int) -> dict[str, Any]:
    from sfa_cache.pipelines.stage1 import run_stage1

    s1 = resolve_stage1_config(dict(
        train_manifest=str(work / "data" / "train.csv"), val_manifest=str(work / "data" / "val.csv"), out=str(work / name),
        backbone=cfg.backbone, image_size=cfg.image_size, backbone_weights=str(work / "image-weights.safetensors"),
        frames=frames, flip_prob=0.0, color_jitter_prob=cfg.color_jitter_prob, temporal_depth=cfg.temporal_depth,
        temporal_pos_std=cfg.temporal_pos_std, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adamw", lr=cfg.lr,
        spatial_lr_scale=cfg.spatial_lr_scale, warmup_epochs=1, weight_decay=0.05, num_workers=cfg.num_workers, device=cfg.device, seed=cfg.seed, log_every=0))
    return run_stage1(s1, resume=(work / name / "config.json").is_file())


def _phase_extract(cfg: DemoConfig, work: Path) -> dict[str, Any]:
    from sfa_cache.pipelines.extract import run_extract

    common = dict(model=str(work / "stage1"), cache_root=str(work / "caches"), frames=cfg.frames, flip_prob=0.0,
                  num_workers=cfg.num_workers, device=cfg.device, seed=cfg.seed)
    train = run_extract(ExtractConfig(manifest=str(work / "data" / "train.csv"), views=2, **common))
    val = run_extract(ExtractConfig(manifest=str(work / "data" / "val.csv"), mode="eval", **common))
    return {"train": str(train.cache_dir), "val": str(val.cache_dir)}


def _phase_stage2(cfg: DemoConfig, work: Path, name: str, adapter: str, init: str) -> dict[str, Any]:
    from sfa_cache.pipelines.train_temporal import run_train_temporal

    caches = json.loads((work / PHASES_FILE).read_text())["extract"]["result"]
    s2 = resolve_train_temporal_config(dict(
        train_cache=caches["train"], val_cache=caches["val"], stage1=str(work / "stage1"), out=str(work / name),
        temporal_init=init, adapter=adapter, frames=cfg.frames, epochs=cfg.stage2_epochs, optimizer="adamw",
        lr=cfg.stage2_lr, warmup_epochs=1, weight_decay=0.05, batch_size=cfg.stage2_batch_size,
        num_workers=cfg.num_workers, device=cfg.device, seed=cfg.seed, log_every=0))
    return run_train_temporal(s2, resume=(work / name / "config.json").is_file())


def _phase_evaluate(cfg: DemoConfig, work: Path) -> dict[str, Any]:
    from sfa_cache.pipelines.evaluate import run_evaluate

    out = {}
    for method, run in METHOD_RUNS.items():
        metrics = run_evaluate(EvaluateConfig(run=str(work / run), manifest=str(work / "data" / "val.csv"),
                                              num_workers=cfg.num_workers, device=cfg.device, out=str(work / "eval" / method)))
        out[method] = {"top1": metrics["top1"], "top5": metrics["top5"]}
    return out


def _run_phase(work: Path, name: str, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run `fn(*args)` in a spawned process unless phases.json says it is done; record time and memory."""
    phases = json.loads((work / PHASES_FILE).read_text()) if (work / PHASES_FILE).is_file() else {}
    if name in phases:
        log.info("demo: %s done already (%.0f s), reused", name, phases[name]["seconds"])
        return phases[name]
    log.info("demo: %s ...", name)
    t0 = time.perf_counter()
    run = run_in_fresh_process(fn, *args, device=resolve_device(args[0].device), name=f"demo phase {name}")
    phases[name] = {"seconds": round(time.perf_counter() - t0, 1), "peak_mem_mb": round(run.peak_bytes / 2**20, 1),
                    "result": json.loads(json.dumps(run.result, default=str))}
    atomic_write_json(work / PHASES_FILE, phases)
    return phases[name]


# --- the report ---------------------------------------------------------------------------------

METHOD_RUNS = {  # method -> the run directory evaluated on raw video
    "stage1-only": "stage1",
    "sfa": "sfa/assembled",
    "naive": "naive/assembled",
    "baseline": "baseline",
}
METHOD_LABELS = {
    "stage1-only": "Stage 1 alone (8 frames)",
    "sfa": "SFA: Stage 1 + cache + Stage 2 (F frames)",
    "naive": "naive: frozen, no adapter, temporal from scratch (F)",
    "baseline": "baseline: whole ViViT-FE at F frames",
}
METHOD_PHASES = {  # the training phases each method pays for (data and image pre-training are shared)
    "stage1-only": ["stage1"],
    "sfa": ["stage1", "extract", "sfa"],
    "naive": ["stage1", "extract", "naive"],
    "baseline": ["baseline"],
}


def report(work: Path, cfg: DemoConfig) -> str:
    phases = json.loads((work / PHASES_FILE).read_text())
    accuracy = phases["evaluate"]["result"]
    base_cost = sum(phases[p]["seconds"] for p in METHOD_PHASES["baseline"])
    rows = []
    for method, label in METHOD_LABELS.items():
        parts = METHOD_PHASES[method]
        total = sum(phases[p]["seconds"] for p in parts)
        peak = max(phases[p]["peak_mem_mb"] for p in parts)
        detail = " + ".join(f"{p} {phases[p]['seconds']:.0f}" for p in parts)
        rows.append([label, f"{accuracy[method]['top1']:.1f}", f"{accuracy[method]['top5']:.1f}", detail,
                     f"{total:.0f}", f"{peak:.0f}", f"{total / base_cost:.2f}x"])
    lines = [
        f"# sfa-cache demo ({cfg.frames} frames; Stage 1 at {cfg.stage1_frames}; {cfg.backbone} at {cfg.image_size} px)",
        "",
        markdown_table(["method", "top-1 (val videos)", "top-5", "training phases (s)", "total (s)",
                        "peak memory (MiB)", "cost vs baseline"], rows),
    ]
    shared = " + ".join(f"{p} {phases[p]['seconds']:.0f} s" for p in ("data", "image"))
    sfa, base, s1 = (accuracy[m]["top1"] for m in ("sfa", "baseline", "stage1-only"))
    chance = 100 / 7
    if max(sfa, base, s1) < chance + 10:
        verdict = "no method rose clearly above chance, so this run does not test the recipe (too short?)"
    elif sfa > base + 2:
        verdict = f"SFA beats the baseline: {sfa:.1f} vs {base:.1f}"
    elif sfa >= base - 2:
        verdict = f"SFA matches the baseline (within 2 points): {sfa:.1f} vs {base:.1f}"
    else:
        verdict = f"SFA does NOT match the baseline here: {sfa:.1f} vs {base:.1f}"
    sfa_cost = sum(phases[p]["seconds"] for p in METHOD_PHASES["sfa"]) / base_cost
    if sfa_cost < 0.8:
        verdict += f", at {sfa_cost:.2f}x its training cost"
    else:  # say why, rather than let the toy's timing speak for the recipe
        verdict += (f", at {sfa_cost:.2f}x its training cost: on these 32-px frames per-clip decoding and fixed overheads, not the ViT, dominate a "
                    "step, so the cache saves little time here (benchmarks.recipe_cost measures 224 px)")
    naive = accuracy["naive"]["top1"]
    if naive > sfa + 2:
        verdict += f"; but the naive ablation beats SFA ({naive:.1f}): the Stage-1 initialisation did not help on this run"
    lines += ["", f"Shared by every method, not counted above: {shared}.",
              f"Verdict on this run: {verdict}; Stage 1 alone (8 frames) reaches {s1:.1f}.",
              f"Chance is {chance:.1f}% (7 classes). Figure: results.png."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(work / "results.md", text)
    curves = {}
    for method, run in (("Stage 1 (8f)", "stage1"), ("SFA Stage 2", "sfa"), ("naive", "naive"), ("baseline", "baseline")):
        curves[method] = [(r["epoch"], r["val_top1"]) for r in read_metrics(work / run) if r.get("kind") == "epoch"]
    bars = {m: sum(phases[p]["seconds"] for p in METHOD_PHASES[m]) for m in METHOD_LABELS}
    curves_and_bars_png(work / "results.png", curves, bars, bar_title="training cost (s), shared phases excluded")
    return text


def run_demo(cfg: DemoConfig) -> str:
    """Run (or finish) every phase in `cfg.workdir` and return the results table."""
    work = Path(cfg.workdir)
    if cfg.frames <= cfg.stage1_frames:
        raise SfaError(f"--frames ({cfg.frames}) must be more than Stage 1's {cfg.stage1_frames}")
    work.mkdir(parents=True, exist_ok=True)
    settings = config_to_dict(cfg)
    settings_file = work / "demo.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise SfaError(f"{work} holds a demo run with other settings; use another --workdir")
    atomic_write_json(settings_file, settings)
    syn = SyntheticConfig(train_per_class=cfg.train_per_class, val_per_class=cfg.val_per_class, seed=cfg.seed)
    _run_phase(work, "data", _phase_data, cfg, work, syn)
    _run_phase(work, "image", _phase_image, cfg, work)
    _run_phase(work, "stage1", _phase_stage1, cfg, work, "stage1", cfg.stage1_frames)
    _run_phase(work, "extract", _phase_extract, cfg, work)
    _run_phase(work, "sfa", _phase_stage2, cfg, work, "sfa", "mlp", "stage1")
    _run_phase(work, "naive", _phase_stage2, cfg, work, "naive", "none", "scratch")
    _run_phase(work, "baseline", _phase_stage1, cfg, work, "baseline", cfg.frames)
    _run_phase(work, "evaluate", _phase_evaluate, cfg, work)
    return report(work, cfg)


def _phase_data(cfg: DemoConfig, work: Path, syn: SyntheticConfig) -> dict[str, Any]:
    manifests = make_synthetic(work / "data", syn)
    return {k: str(v) for k, v in manifests.items()}
