"""`sfa-cache plan`: how many frames per clip each training regime fits in a memory budget.

On a CUDA device it measures (two real training steps per probe, `torch.cuda.max_memory_allocated`);
elsewhere, or with `estimate=True`, it evaluates the memory model (sfa_cache/cost/memory_model.py).
The output says which it did.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import torch

from sfa_cache.cost.frame_planner import PlanRow, plan_frames
from sfa_cache.cost.regimes import REGIME_LABELS
from sfa_cache.errors import SfaError
from sfa_cache.pipelines.job_configs import PlanConfig
from sfa_cache.report import human_bytes, markdown_table, parse_size
from sfa_cache.runtime import resolve_device

log = logging.getLogger(__name__)



def run_plan(cfg: PlanConfig) -> tuple[str, list[PlanRow]]:
    """Probe every backbone x regime; returns the report text and the rows."""
    cfg.validate()
    budget = parse_size(cfg.budget)
    device = resolve_device(cfg.device)
    measure = device.type == "cuda" and not cfg.estimate
    if cfg.amp == "fp16" and not measure:
        raise SfaError("--amp fp16 is a CUDA mode; estimate with bf16 (the same bytes) or none")
    rows = plan_frames(
        cfg.backbones,
        budget,
        measure=measure,
        device=device,
        image_size=cfg.image_size,
        temporal_depth=cfg.temporal_depth,
        amp=cfg.amp,
        optimizer=cfg.optimizer,
        step=cfg.step,
        cap=cfg.cap,
        progress=(lambda what: log.info("plan: measuring %s ...", what)) if measure else None,
    )
    if measure:
        how = (f"MEASURED on {torch.cuda.get_device_name(device)}: torch.cuda.max_memory_allocated over two training "
               "steps (the CUDA context, a few hundred MiB, comes on top)")
    else:
        why = "--estimate" if cfg.estimate else "no CUDA device here"
        how = (f"ESTIMATED ({why}) by the memory model in docs/benchmarks.md#memory-model; allocator "
               "fragmentation and the CUDA context come on top, so leave ~10-20% headroom")
    table = markdown_table(
        ["backbone", "regime", "max frames per clip (batch 1)", "peak memory at that count"],
        [[r.backbone, REGIME_LABELS[r.regime], _frames_cell(r, cfg.step), human_bytes(r.peak_bytes)] for r in rows])
    text = (f"Frames per clip that train at batch 1 within {cfg.budget} ({human_bytes(budget)}); {cfg.image_size} px, "
            f"amp {cfg.amp}, {cfg.optimizer}, MLP adapter + {cfg.temporal_depth}-layer temporal transformer.\n"
            f"{how}.\n\n{table}\n")
    return text, rows


def _frames_cell(row: PlanRow, step: int) -> str:
    if row.max_frames == 0:
        return f"none ({step} frames do not fit)"
    return f">= {row.max_frames} (search cap)" if row.capped else str(row.max_frames)


def rows_as_json(rows: list[PlanRow]) -> list[dict[str, Any]]:
    return [asdict(r) | {"peak_bytes": None if r.peak_bytes == float("inf") else int(r.peak_bytes)} for r in rows]
