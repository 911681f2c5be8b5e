"""The GPU suite's sections (benchmarks/gpu_suite.py runs each in its own process).

Each section takes a `Section` context and calls `ctx.emit(lines)` with its report lines as they
grow (a row at a time), so a section stopped by its timeout still reports what it measured.

- budget: the largest frame count per clip that trains within a memory budget, found by real
  out-of-memory with the process capped at the budget (`set_per_process_memory_fraction`,
  the CUDA context and reserved memory counted), per precision, batch, regime and backbone.
- step: seconds and peak memory per training step of each regime, at batch 1 and 8.
- extract: `sfa-cache extract`'s frames/s against the bare spatial forward on frames already on
  the device; the decode workers' start-up is left out by timing a warm-up run and a longer one
  and taking the difference (at least 30 s of work at real sizes).
- input: a real Stage-2 epoch (`Trainer`, the `train-temporal` feeds) in each placement against
  the same Trainer stepping on synthetic tensors already on the device, over >= 5 s each.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from benchmarks.common import bare_forward, benchmark_dataset, random_feature_cache, seconds_per_step, table
from sfa_cache.atomic import atomic_write_json
from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.feeds.epochs import WindowedEpochSampler
from sfa_cache.cache.feeds.stage2 import make_feeds
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.cost.frame_planner import largest_fitting
from sfa_cache.cost.memory_model import estimate_step_memory
from sfa_cache.cost.regimes import REGIMES, TrainStep, build_regime_model, regime_config, spatial_shape
from sfa_cache.report import human_bytes
from sfa_cache.train.loop import Trainer
from sfa_cache.train.optim import OptimConfig


@dataclass
class Sizes:
    """What each section runs at: the real sizes, or `--quick`'s."""

    backbones: tuple[str, ...] = ("vit_base_patch16_224", "vit_large_patch16_224")
    image_size: int = 224
    step_frames: tuple[int, ...] = (32, 128)
    batches: tuple[int, ...] = (1, 8)
    amps: tuple[str, ...] = ("bf16", "fp16", "none")
    budget: int = 12 * 2**30
    plan_cap: int = 4096
    video_size: int = 128  # source videos (upscaled to image_size by the transforms)
    extract_frames: int = 32
    extract_seconds: float = 30.0  # of timed extraction work, after the warm-up run
    batch_frames: int = 512
    cache_clips: int = 4096
    cached_frames: int = 128
    train_frames: int = 32
    batch: int = 64
    input_seconds: float = 5.0
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))


QUICK = Sizes(backbones=("vit_tiny_patch16_224",), image_size=32, step_frames=(8,), batches=(1, 2), amps=("none",),
              budget=2**30, plan_cap=64, video_size=32, extract_frames=8, extract_seconds=1.0, batch_frames=64,
              cache_clips=96, cached_frames=16, train_frames=8, batch=16, input_seconds=0.5, workers=2)


@dataclass
class Section:
    sizes: Sizes
    device: torch.device
    amp: str  # the precision of the timed sections (bf16 on CUDA)
    workdir: Path
    result: Path  # where `emit` writes

    def emit(self, lines: list[str]) -> None:
        atomic_write_json(self.result, {"lines": lines})


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- budget -------------------------------------------------------------------------------------

def cap_process_memory(device: torch.device, budget: int) -> int:
    """Cap this process's CUDA allocator so that it, plus what the process holds outside the
    allocator (the CUDA context, library workspaces), stays within `budget`; returns that outside part."""
    torch.cuda.init()
    torch.zeros(1, device=device)  # the context exists from here on
    free, total = torch.cuda.mem_get_info(device)
    outside = (total - free) - torch.cuda.memory_reserved(device)
    torch.cuda.set_per_process_memory_fraction(max(0.0, (budget - outside) / total), device)
    return outside


def trains_within_cap(regime: str, backbone: str, frames: int, batch: int, amp: str, sizes: Sizes,
                      device: torch.device) -> bool:
    """Two AdamW steps (the second with the optimiser state allocated) without running out of memory."""
    step = None
    try:
        cfg = regime_config(backbone, frames, image_size=sizes.image_size)
        step = TrainStep(regime, cfg, batch, device, amp=amp, optimizer="adamw")
        for _ in range(2):
            step()
        torch.cuda.synchronize(device)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        del step
        _free()


def max_frames(regime: str, backbone: str, batch: int, amp: str, ctx: Section) -> tuple[int, str]:
    """(the memory model's largest frame count within the budget, the measured one as a cell)."""
    s = ctx.sizes

    def estimated(frames: int) -> float:
        cfg = regime_config(backbone, frames, image_size=s.image_size)
        return float(estimate_step_memory(regime, cfg, amp=amp, optimizer="adamw", batch=batch).total)

    def oom(frames: int) -> float:  # 0 fits, inf does not: `largest_fitting` against a budget of 1
        return 0.0 if trains_within_cap(regime, backbone, frames, batch, amp, s, ctx.device) else math.inf

    estimate, _ = largest_fitting(estimated, s.budget, cap=s.plan_cap)
    if ctx.device.type != "cuda":
        return estimate, "not measured (no GPU)"
    measured, _ = largest_fitting(oom, 1, cap=s.plan_cap)
    return estimate, (f">= {measured}" if measured == s.plan_cap else str(measured or "none fit"))


def budget(ctx: Section) -> None:
    s = ctx.sizes
    head = [f"Largest frames per clip that train (2 AdamW steps) within {human_bytes(s.budget)}, multiples of 8 up "
            f"to {s.plan_cap}, {s.image_size} px; measured by real out-of-memory under the cap; the memory model's "
            "estimate beside it", ""]
    if ctx.device.type == "cuda":
        outside = cap_process_memory(ctx.device, s.budget)
        head[0] += f" (CUDA context and workspaces outside the allocator: {human_bytes(outside)}, counted)"
    rows: list[list[str]] = []
    # The design's claim first (bf16, ViT-B, batch 1), so that a timeout keeps what matters most.
    for amp, backbone, batch, regime in itertools.product(s.amps, s.backbones, s.batches, REGIMES):
        estimate, measured = max_frames(regime, backbone, batch, amp, ctx)
        rows.append([amp, backbone, str(batch), regime, measured, str(estimate)])
        ctx.emit(head + [table(["precision", "backbone", "batch", "regime", "measured max frames", "memory model"],
                               rows)])


# --- step ---------------------------------------------------------------------------------------

def step(ctx: Section) -> None:
    s = ctx.sizes
    backbone = s.backbones[0]
    rows: list[list[str]] = []
    for frames in s.step_frames:
        for batch in s.batches:
            times, peaks = {}, {}
            for regime in REGIMES:
                cfg = regime_config(backbone, frames, image_size=s.image_size)
                train = None
                try:
                    if ctx.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(ctx.device)
                    train = TrainStep(regime, cfg, batch, ctx.device, amp=ctx.amp, optimizer="adamw")
                    times[regime] = seconds_per_step(train, ctx.device, warmup=3, steps=10)
                    peaks[regime] = (human_bytes(torch.cuda.max_memory_allocated(ctx.device))
                                     if ctx.device.type == "cuda" else "-")
                except torch.OutOfMemoryError:
                    times[regime], peaks[regime] = math.inf, "out of memory"
                finally:
                    del train
                    _free()
            base = times["baseline"]
            rows.append([str(frames), str(batch)] + [f"{times[r] * 1e3:.1f} ms ({times[r] / base:.3f}x), {peaks[r]}"
                                                     for r in REGIMES])
            ctx.emit([f"{backbone}, {s.image_size} px, amp {ctx.amp}, AdamW; per step: time (ratio to the baseline), "
                      "peak memory", "", table(["frames", "batch", *REGIMES], rows)])


# --- extract ------------------------------------------------------------------------------------

def _extract_seconds(ctx: Section, manifest: Path, root: Path) -> tuple[float, int]:
    from sfa_cache.pipelines.extract import run_extract
    from sfa_cache.pipelines.job_configs import ExtractConfig

    shutil.rmtree(root, ignore_errors=True)
    s = ctx.sizes
    cfg = ExtractConfig(backbone=s.backbones[0], image_size=s.image_size, manifest=str(manifest), cache_root=str(root),
                        frames=s.extract_frames, batch_frames=s.batch_frames, num_workers=s.workers,
                        device=str(ctx.device), amp=ctx.amp, progress=False)
    t0 = time.perf_counter()
    result = run_extract(cfg)
    return time.perf_counter() - t0, result.clips


def _repeated_manifest(videos: Path, rows: int, out: Path) -> Path:
    """A manifest of `rows` rows over the videos of `videos` (repeated: each row is decoded apart)."""
    lines = videos.read_text().splitlines()
    body = [f"{videos.parent / line.split(',')[0]},{line.split(',')[1]}" for line in lines[1:]]
    out.write_text("path,label\n" + "\n".join(body[i % len(body)] for i in range(rows)) + "\n")
    return out


def extract(ctx: Section) -> None:
    s = ctx.sizes
    videos = benchmark_dataset(ctx.workdir / f"videos-{s.video_size}", per_class=8,
                               frames=max(24, 2 * s.extract_frames), size=s.video_size)
    bare = bare_forward(s.backbones[0], s.image_size, s.batch_frames, ctx.device, ctx.amp,
                        seconds=min(5.0, s.extract_seconds))
    warm_rows = max(16, s.workers * 4)
    timed_rows = max(warm_rows, math.ceil(s.extract_seconds * bare / s.extract_frames))
    warm, n_warm = _extract_seconds(ctx, _repeated_manifest(videos, warm_rows, ctx.workdir / "warm.csv"),
                                    ctx.workdir / "warm-caches")
    both, n_both = _extract_seconds(ctx, _repeated_manifest(videos, warm_rows + timed_rows, ctx.workdir / "all.csv"),
                                    ctx.workdir / "all-caches")
    if both <= warm:
        raise RuntimeError(f"the {n_both}-clip extraction ({both:.1f} s) was not slower than the {n_warm}-clip one "
                           f"({warm:.1f} s): start-up noise hides the rate; raise extract_seconds")
    rate = (n_both - n_warm) * s.extract_frames / (both - warm)
    ctx.emit([f"{s.backbones[0]}, {s.image_size} px from {s.video_size} px videos, batch {s.batch_frames} frames, amp "
              f"{ctx.amp}, {s.extract_frames} frames a clip, {s.workers} decode workers; extraction's rate is that of "
              f"the {n_both - n_warm} clips a {n_both}-clip run took beyond a {n_warm}-clip one ({both - warm:.1f} s), "
              "so worker start-up is left out", "",
              table(["bare forward frames/s", "extraction frames/s", "ratio (target >= 0.9)"],
                    [[f"{bare:.0f}", f"{rate:.0f}", f"{rate / bare:.2f}"]])])


# --- input --------------------------------------------------------------------------------------

def _epoch_rate(trainer: Trainer, batches: Callable[[int], Iterable], seconds: float) -> float:
    """Training clips/s of whole `trainer.train_epoch` calls, repeated for at least `seconds` after
    one warm-up epoch."""
    trainer.train_epoch(batches(0))
    clips, t0, epoch = 0, time.perf_counter(), 1
    while True:
        clips += trainer.train_epoch(batches(epoch))["train_clips"]
        epoch += 1
        if time.perf_counter() - t0 >= seconds:
            return clips / (time.perf_counter() - t0)


def stage2_input(ctx: Section) -> None:
    s = ctx.sizes
    dim = spatial_shape(s.backbones[0], s.image_size).width
    cache = FeatureCache(random_feature_cache(ctx.workdir / f"features-{s.cache_clips}-{dim}", s.cache_clips, 2,
                                              s.cached_frames, dim))
    dataset = CachedFeatureDataset(cache, s.train_frames, train=True)
    cfg = regime_config(s.backbones[0], s.train_frames, image_size=s.image_size)  # 400 classes
    optim = OptimConfig(epochs=1000, batch_size=s.batch, optimizer="adamw", lr=1e-4, amp=ctx.amp, warmup_epochs=0)
    steps = -(-len(dataset) // s.batch)

    def trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(build_regime_model("cached", cfg, ctx.device), optim, steps_per_epoch=steps,
                       num_classes=cfg.num_classes, device=ctx.device)

    x = torch.randn(s.batch, s.train_frames, dim, device=ctx.device)
    y = torch.randint(0, cfg.num_classes, (s.batch,), device=ctx.device)
    synthetic = _epoch_rate(trainer(), lambda epoch: [(x, y, 0)] * steps, s.input_seconds)
    rows = [["synthetic tensors on the device (reference)", f"{synthetic:.0f}", "1.00"]]
    head = [f"{len(dataset)} clips x 2 views x {s.cached_frames} cached frames, D={dim}, float16; a real "
            f"`train-temporal` epoch (Trainer, its feeds) at {s.train_frames} frames, batch {s.batch}, amp {ctx.amp}, "
            f"AdamW, over >= {s.input_seconds:g} s", ""]
    placements = ("gpu", "ram", "stream") if ctx.device.type == "cuda" else ("ram", "stream")
    for placement in placements:
        sampler = WindowedEpochSampler(dataset.shard_of, window=4, shuffle=True)
        feeds = make_feeds((dataset, sampler), None, requested=placement,
                           batch_size=s.batch, num_workers=s.workers, device=ctx.device)

        def batches(epoch: int, sampler: WindowedEpochSampler = sampler, feed: Iterable = feeds.train) -> Iterable:
            sampler.set_epoch(epoch)
            return feed

        rate = _epoch_rate(trainer(), batches, s.input_seconds)
        rows.append([f"{feeds.placement} ({feeds.why})", f"{rate:.0f}", f"{rate / synthetic:.2f}"])
        ctx.emit(head + [table(["features from", "training clips/s", "vs synthetic (target gpu >= 0.9)"], rows)])
        del feeds
        _free()


def fail_on_purpose(ctx: Section) -> None:
    """The suite's own test: a section that reports a line, then fails."""
    ctx.emit(["measured before the failure"])
    raise RuntimeError("this section fails on purpose")


SECTIONS: dict[str, tuple[str, Callable[[Section], None], float]] = {  # name: (title, body, timeout in s)
    "budget": ("Frames that fit a memory budget, by real out-of-memory", budget, 150.0),
    "step": ("Step cost and peak memory: baseline, paper Stage 2, cached Stage 2", step, 60.0),
    "extract": ("Extraction against the bare forward", extract, 120.0),
    "input": ("Stage-2 input: a real epoch per placement against synthetic tensors", stage2_input, 90.0),
    "fail": ("A section that fails on purpose (only when named)", fail_on_purpose, 30.0),
}
DEFAULT_ORDER = ("budget", "step", "extract", "input")


def quick_sizes(quick: bool) -> Sizes:
    return dataclasses.replace(QUICK) if quick else Sizes()
