"""How many frames per clip train within a memory budget: measured on CUDA, else estimated.

`sfa-cache plan` and `python -m benchmarks.frames_budget` are thin front ends to `plan_frames`.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from sfa_cache.cost.memory_model import estimate_step_memory
from sfa_cache.cost.regimes import REGIMES, TrainStep, regime_config
from sfa_cache.errors import SfaError


def largest_fitting(
    peak_bytes: Callable[[int], float], budget: int, *, step: int = 8, cap: int = 4096
) -> tuple[int, float]:
    """The largest multiple of `step` up to `cap` whose `peak_bytes` is within `budget`, and that peak.

    Peak memory grows with the frame count, so: double from `step` until over budget (or the cap),
    then bisect. Returns (0, inf) when even `step` frames do not fit.
    """
    if step < 1 or cap < step:
        raise SfaError(f"need 1 <= step <= cap, got step {step} and cap {cap}")
    cap = cap // step * step  # lo and hi stay multiples of step, so bisection always makes progress
    lo, lo_peak, hi = 0, math.inf, None
    n = step
    while n <= cap:
        peak = peak_bytes(n)
        if peak > budget:
            hi = n
            break
        lo, lo_peak = n, peak
        n *= 2
    if hi is None:
        if lo == cap:
            return lo, lo_peak
        hi = cap + step  # the cap itself was not tried yet
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        peak = peak_bytes(mid)
        if peak <= budget:
            lo, lo_peak = mid, peak
        else:
            hi = mid
    return lo, lo_peak


def measure_step_memory(
    regime: str,
    backbone: str,
    frames: int,
    device: torch.device,
    *,
    batch: int = 1,
    image_size: int = 224,
    temporal_depth: int = 4,
    amp: str = "bf16",
    optimizer: str = "sgd",
) -> float:
    """`torch.cuda.max_memory_allocated` over two training steps, from an empty allocator; inf on OOM."""
    if device.type != "cuda":
        raise SfaError("measuring step memory needs a CUDA device; use the estimate on this machine")
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    step = None
    try:
        cfg = regime_config(backbone, frames, image_size=image_size, temporal_depth=temporal_depth)
        step = TrainStep(regime, cfg, batch, device, amp=amp, optimizer=optimizer)
        for _ in range(2):  # the second step has the optimiser state allocated
            step()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - start)
    except torch.OutOfMemoryError:
        return math.inf
    finally:
        del step
        gc.collect()
        torch.cuda.empty_cache()


@dataclass
class PlanRow:
    backbone: str
    regime: str
    max_frames: int  # 0: not even `step` frames fit
    peak_bytes: float  # at max_frames
    capped: bool  # max_frames is the search cap: more frames may fit
    measured: bool  # False: estimated by the memory model


def plan_frames(backbones: Sequence[str], budget: int, *, measure: bool, device: torch.device | None = None,
                image_size: int = 224, temporal_depth: int = 4, amp: str = "bf16", optimizer: str = "sgd",
                step: int = 8, cap: int = 4096, regimes: Sequence[str] = REGIMES,
                progress: Callable[[str], None] | None = None) -> list[PlanRow]:
    """Largest frame count per clip at batch 1 within `budget` bytes, per backbone and regime."""
    rows = []
    for backbone in backbones:
        for regime in regimes:
            if progress is not None:
                progress(f"{backbone} {regime}")
            if measure:
                def peak(frames: int, regime: str = regime, backbone: str = backbone) -> float:
                    return measure_step_memory(regime, backbone, frames, device, image_size=image_size,
                                               temporal_depth=temporal_depth, amp=amp, optimizer=optimizer)
            else:
                def peak(frames: int, regime: str = regime, backbone: str = backbone) -> float:
                    cfg = regime_config(backbone, frames, image_size=image_size, temporal_depth=temporal_depth)
                    return float(estimate_step_memory(regime, cfg, amp=amp, optimizer=optimizer).total)
            frames, peak_bytes = largest_fitting(peak, budget, step=step, cap=cap)
            rows.append(PlanRow(backbone, regime, frames, peak_bytes, frames == cap // step * step, measured=measure))
    return rows
