"""Shared helpers: describe the machine, make benchmark data and caches, time steps, measure memory."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sfa_cache.cache.extraction.builder import write_features
from sfa_cache.cache.format.write import ShardData
from sfa_cache.data.synthetic import SyntheticConfig, make_synthetic
from sfa_cache.fresh_process import run_in_fresh_process
from sfa_cache.report import markdown_table as table  # noqa: F401  (re-exported for the scripts)
from sfa_cache.runtime import autocast


def machine() -> str:
    """One line: date, CPU model and cores, GPU and driver when used, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [datetime.date.today().isoformat(), f"{cpu} x {os.cpu_count()} cores"]
    if torch.cuda.is_available():
        driver = ""
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
        parts.append(f"GPU {torch.cuda.get_device_name()} (driver {driver or '?'}, CUDA {torch.version.cuda})")
    else:
        parts.append("no GPU")
    import timm
    import zarr

    parts.append(f"torch {torch.__version__}, timm {timm.__version__}, zarr {zarr.__version__}")
    return "; ".join(parts)


def benchmark_dataset(root: Path, *, per_class: int, frames: int, size: int = 64) -> Path:
    """A synthetic dataset (reused when already there); returns its train manifest."""
    cfg = SyntheticConfig(train_per_class=per_class, val_per_class=1, num_frames=frames, size=size)
    return make_synthetic(root, cfg)["train"]


def write_feature_cache(
    root: Path, data: ShardData, compressor: str = "blosc", clips_per_shard: int = 256
) -> tuple[Path, float]:
    """A finished cache of `data` under `root` (through the builder, as an extraction writes it):
    its folder and the seconds the writing took."""
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    cache_dir = write_features(
        root,
        "bench",
        data,
        classes=[str(i) for i in range(400)],
        clips_per_shard=clips_per_shard,
        compressor=compressor,
        source="benchmark",
    )
    return cache_dir, time.perf_counter() - t0


def random_feature_cache(root: Path, clips: int, views: int, frames: int, dim: int) -> Path:
    """A real cache under `root` (blosc, float16) of random features and labels, for read and step
    timings; its folder (the same call again finds the same finished cache and reuses it)."""
    rng = np.random.default_rng(0)
    data = ShardData.empty(clips, views, frames, dim, "float16")
    data.features[:] = rng.standard_normal(data.features.shape, dtype=np.float32)
    data.valid[:] = True
    data.labels[:] = rng.integers(0, 400, clips)
    data.frame_index[:] = np.arange(frames, dtype=np.int32)
    return write_features(root, "bench", data, classes=[str(i) for i in range(400)], source="benchmark")


def seconds_per_step(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Mean seconds per call after `warmup` calls: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def in_fresh_process(fn: Callable[..., Any], *args: Any, device: torch.device) -> tuple[Any, float]:
    """Run `fn(*args)` in a spawned process: (its result, its peak memory in bytes).

    Peak memory is `torch.cuda.max_memory_allocated` on a GPU and the peak-RSS increase of the
    process on the CPU, so each measurement starts from nothing. (None, inf) on out-of-memory.
    """
    try:
        run = run_in_fresh_process(fn, *args, device=device, name=f"benchmark {getattr(fn, '__name__', fn)}")
    except torch.OutOfMemoryError:
        return None, float("inf")
    return run.result, run.peak_bytes - run.start_bytes


def bare_forward(backbone: str, image_size: int, batch: int, device: torch.device, amp: str,
                 seconds: float = 10.0) -> float:
    """Frames/s of the spatial model alone on uint8 frames already on the device (normalised there,
    as extraction does), at least `seconds` of calls after warm-up: extraction's ceiling."""
    from sfa_cache.models.spatial import build_backbone_spatial
    from sfa_cache.video.transforms import normalise_uint8

    spatial, cfg = build_backbone_spatial(backbone, image_size)
    model = spatial.backbone.to(device).eval()
    x = torch.randint(0, 255, (batch, 3, image_size, image_size), dtype=torch.uint8, device=device)

    @torch.inference_mode()
    def forward() -> None:
        with autocast(device, amp):
            model(normalise_uint8(x, cfg.mean, cfg.std))

    calls = 3
    per_call = seconds_per_step(forward, device, warmup=3, steps=calls)
    calls = max(calls, int(seconds / max(per_call, 1e-6)))
    return batch / seconds_per_step(forward, device, warmup=1, steps=calls)
