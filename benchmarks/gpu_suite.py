"""The one-shot GPU check: CUDA tests and the figures docs/benchmarks.md needs, as one markdown report.

    python -m benchmarks.gpu_suite --report gpu_suite.md            # on one H100 / H200: about 6-8 min
    python -m benchmarks.gpu_suite --device cpu --quick --report r.md  # the same code path on a CPU, tiny sizes

Sections (each timed, each reported even when another fails):

1. tests: `pytest -m gpu` (the CUDA-marked tests; they skip on a CPU).
2. step cost: seconds per training step of the baseline (whole ViViT-FE), the paper's Stage 2
   (frozen spatial forward every step) and cached Stage 2, ViT-B at F = 32 and 128, batch 1,
   bf16, CUDA events; as ratios to the baseline.
3. extraction against the bare spatial forward on the same device and batch (target >= 0.9).
4. Stage-2 input: training clips/s of cached Stage 2 (ViT-B width, 32 of 128 cached frames,
   batch 64, bf16) fed from a resident GPU copy, streamed shards, and synthetic tensors already
   on the GPU (target: resident within 10% of synthetic).
5. frames that fit 12 GiB at batch 1 for each regime (the paper's Table 4 form): measured with
   `sfa-cache plan`'s search on a GPU, the memory model's estimate beside it.

`--quick` shrinks every size (tiny ViT, 32 px, few clips) so the whole path runs in a minute on
a CPU; its numbers mean nothing. tests/test_benchmarks.py runs it that way.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from benchmarks.common import benchmark_dataset, machine, random_feature_cache, seconds_per_step, table
from benchmarks.extract_throughput import bare_forward
from benchmarks.frames_budget import plan_cell
from sfa_cache.cache.dataset import CachedFeatureDataset
from sfa_cache.cache.epochs import WindowedEpochSampler
from sfa_cache.cache.reader import FeatureCache
from sfa_cache.cache.resident import ResidentBatches, load_resident
from sfa_cache.cache.streaming import StreamingBatches
from sfa_cache.cost.plan import plan_frames
from sfa_cache.cost.regimes import REGIMES, TrainStep, build_regime_model, regime_config, spatial_shape
from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.report import human_bytes
from sfa_cache.runtime import autocast
from sfa_cache.train.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sizes:
    """What each section runs at: the real sizes, or `--quick`'s."""

    backbone: str = "vit_base_patch16_224"
    image_size: int = 224
    step_frames: tuple[int, ...] = (32, 128)
    extract_clips_per_class: int = 24
    extract_frames: int = 32
    batch_frames: int = 512
    cache_clips: int = 4096
    cached_frames: int = 128
    train_frames: int = 32
    batch: int = 64
    budget: int = 12 * 2**30
    plan_cap: int = 4096
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))


QUICK = Sizes(backbone="vit_tiny_patch16_224", image_size=32, step_frames=(8,), extract_clips_per_class=1,
              extract_frames=8, batch_frames=64, cache_clips=96, cached_frames=16, train_frames=8, batch=16,
              budget=2**30, plan_cap=64, workers=2)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def section(self, title: str, run: Callable[[], list[str]]) -> None:
        """Run one section; its lines, or the error that stopped it, go into the report."""
        print(f"== {title}", flush=True)
        t0 = time.perf_counter()
        try:
            body = run()
        except Exception:  # a benchmark section failing must not lose the others' figures
            body = ["FAILED:", "", "```", traceback.format_exc(limit=8).rstrip(), "```"]
        self.lines += [f"## {title} ({time.perf_counter() - t0:.0f} s)", "", *body, ""]
        print("\n".join(body), flush=True)


def run_tests(device: torch.device) -> list[str]:
    """The CUDA-marked tests (`-m gpu`), in a subprocess; its summary line."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-40:]
    return [f"`pytest -m gpu`: {pytest_status(proc.returncode, proc.stdout)}", "", "```", *tail, "```"]


def pytest_status(returncode: int, output: str) -> str:
    """'passed' only when tests ran and none failed; every test skipped, or none collected, is
    'NOT RUN' (a CPU machine, a missing marker), never passed."""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", output)}
    if returncode == 0 and counts.get("passed", 0) > 0:
        return f"passed ({counts['passed']} passed, {counts.get('skipped', 0)} skipped)"
    if returncode in (0, 5):  # 5: none collected
        return f"NOT RUN ({counts.get('skipped', 0)} skipped, none passed)"
    return f"FAILED (exit {returncode})"


def step_cost(sizes: Sizes, device: torch.device, amp: str) -> list[str]:
    """Seconds per step of the three regimes at batch 1."""
    rows = []
    for frames in sizes.step_frames:
        cfg = regime_config(sizes.backbone, frames, image_size=sizes.image_size)
        times = {}
        for regime in REGIMES:
            try:
                step = TrainStep(regime, cfg, 1, device, amp=amp)
                times[regime] = seconds_per_step(step, device, warmup=3, steps=10)
            except torch.OutOfMemoryError:
                times[regime] = float("inf")
            finally:
                step = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        base = times["baseline"]
        rows.append([str(frames)] + [f"{times[r] * 1e3:.1f} ms ({times[r] / base:.3f}x)" for r in REGIMES])
    return [f"{sizes.backbone}, {sizes.image_size} px, batch 1, amp {amp}, SGD; ratio to the baseline in brackets",
            "", table(["frames", *REGIMES], rows)]


def extraction(sizes: Sizes, device: torch.device, amp: str, workdir: Path) -> list[str]:
    """Extraction frames/s (decode pool, device normalisation, writing) against the bare forward."""
    per_class = sizes.extract_clips_per_class
    manifest = benchmark_dataset(workdir / f"data-{per_class}", per_class=per_class, frames=64)
    root = workdir / "suite-caches"
    shutil.rmtree(root, ignore_errors=True)
    cfg = ExtractConfig(backbone=sizes.backbone, image_size=sizes.image_size, manifest=str(manifest),
                        cache_root=str(root), frames=sizes.extract_frames, batch_frames=sizes.batch_frames,
                        num_workers=sizes.workers, device=str(device), progress=False)
    result = run_extract(cfg)
    bare = bare_forward(sizes.backbone, sizes.image_size, sizes.batch_frames, device, amp, seconds=5.0)
    ratio = result.frames_per_second / bare
    return [f"{sizes.backbone}, {sizes.image_size} px, batch {sizes.batch_frames} frames, amp {amp}, "
            f"{result.clips} clips x {sizes.extract_frames} frames, {sizes.workers} decode workers",
            "", table(["bare forward frames/s", "extraction frames/s", "ratio (target >= 0.9)", "model busy"],
                      [[f"{bare:.0f}", f"{result.frames_per_second:.0f}", f"{ratio:.2f}", f"{result.model_busy:.2f}"]])]


def _train_rate(model: torch.nn.Module, batches: Iterable, device: torch.device, amp: str) -> float:
    """Training clips/s of cached Stage 2 over `batches` of ([B, T, D], [B], _)."""
    opt = build_optimizer(model, "sgd", lr=1e-3, weight_decay=0.0)
    n = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for x, y, _ in batches:
        with autocast(device, amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def stage2_input(sizes: Sizes, device: torch.device, amp: str, workdir: Path) -> list[str]:
    """Cached Stage-2 training clips/s: resident on the device, streamed, synthetic in-device tensors."""
    dim = spatial_shape(sizes.backbone, sizes.image_size).width
    cache = FeatureCache(random_feature_cache(workdir / f"suite-features-{sizes.cache_clips}-{dim}", sizes.cache_clips,
                                              2, sizes.cached_frames, dim))
    dataset = CachedFeatureDataset(cache, sizes.train_frames, train=True)
    cfg = regime_config(sizes.backbone, sizes.train_frames, image_size=sizes.image_size)  # 400 classes

    def sampler() -> WindowedEpochSampler:
        return WindowedEpochSampler(dataset.shard_of, window=4, shuffle=True)

    def measure(make: Callable[[WindowedEpochSampler], Iterable]) -> float:
        torch.manual_seed(0)
        model = build_regime_model("cached", cfg, device)
        s = sampler()
        batches = make(s)
        rate = 0.0
        for epoch in range(2):  # the first pays for workers, allocator and kernels
            s.set_epoch(epoch)
            rate = _train_rate(model, batches, device, amp)
        return rate

    steps = -(-len(dataset) // sizes.batch)
    x = torch.randn(sizes.batch, sizes.train_frames, dim, device=device)
    y = torch.randint(0, 400, (sizes.batch,), device=device)
    synthetic = measure(lambda s: [(x, y, 0)] * steps)
    t0 = time.perf_counter()
    store = load_resident(cache, (0, 1), device=device, progress=False)
    load_s = time.perf_counter() - t0
    resident = measure(lambda s, held=store: ResidentBatches(held, s, dataset.selection, batch_size=sizes.batch,
                                                             device=device))
    store = None  # the streamed run has the device to itself
    streamed = measure(lambda s: StreamingBatches(dataset, s, batch_size=sizes.batch, num_workers=sizes.workers,
                                                  device=device))
    rows = [["synthetic tensors on the device (reference)", f"{synthetic:.0f}", "1.00"],
            [f"resident on {device.type} (load {load_s:.1f} s)", f"{resident:.0f}", f"{resident / synthetic:.2f}"],
            [f"streamed shards ({sizes.workers} workers)", f"{streamed:.0f}", f"{streamed / synthetic:.2f}"]]
    return [f"{len(dataset)} clips x 2 views x {sizes.cached_frames} cached frames, D={dim}, float16; training at "
            f"{sizes.train_frames} frames, batch {sizes.batch}, amp {amp}, SGD; epoch 2 of 2",
            "", table(["features from", "training clips/s", "vs synthetic (target resident >= 0.9)"], rows)]


def frames_budget(sizes: Sizes, device: torch.device, amp: str) -> list[str]:
    """The largest frame count per clip at batch 1 within the budget, per regime."""
    common = dict(device=device, amp=amp, cap=sizes.plan_cap, image_size=sizes.image_size)
    estimated = plan_frames([sizes.backbone], sizes.budget, measure=False, **common)
    measured = plan_frames([sizes.backbone], sizes.budget, measure=True, **common) if device.type == "cuda" else None

    rows = [[est.regime, plan_cell(measured[i]) if measured else "not measured (no GPU)", plan_cell(est)]
            for i, est in enumerate(estimated)]
    return [f"{sizes.backbone}, {sizes.image_size} px, budget {human_bytes(sizes.budget)}, batch 1, amp {amp}, SGD",
            "", table(["regime", "measured max frames (peak)", "memory model (peak)"], rows)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path, not the hardware")
    p.add_argument("--report", type=Path, default=Path("gpu_suite.md"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-gpu-suite"))
    p.add_argument("--skip", nargs="*", default=[], choices=["tests", "step", "extract", "input", "budget"])
    args = p.parse_args(argv)
    device = torch.device(args.device)
    amp = "bf16" if device.type == "cuda" else "none"
    sizes = QUICK if args.quick else Sizes()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = Report([f"# sfa-cache GPU suite{' (--quick: sizes too small to mean anything)' if args.quick else ''}",
                     "", f"Machine: {machine()}", "",
                     f"Command: `python -m benchmarks.gpu_suite {' '.join(sys.argv[1:] if argv is None else argv)}`",
                     ""])
    t0 = time.perf_counter()
    sections = {
        "tests": ("CUDA-marked tests", lambda: run_tests(device)),
        "step": ("Step cost: baseline, paper Stage 2, cached Stage 2", lambda: step_cost(sizes, device, amp)),
        "extract": ("Extraction against the bare forward", lambda: extraction(sizes, device, amp, args.workdir)),
        "input": ("Stage-2 input: resident, streamed, synthetic",
                  lambda: stage2_input(sizes, device, amp, args.workdir)),
        "budget": (f"Frames that fit {human_bytes(sizes.budget)} at batch 1",
                   lambda: frames_budget(sizes, device, amp)),
    }
    for key, (title, run) in sections.items():
        if key not in args.skip:
            report.section(title, run)
    report.lines.append(f"Total: {time.perf_counter() - t0:.0f} s")
    args.report.write_text("\n".join(report.lines) + "\n")
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
