"""The largest frame count per clip that trains at batch 1 within a memory budget (paper Table 4).

    python -m benchmarks.frames_budget                      # 12 GiB, ViT-B and ViT-L
    python -m benchmarks.frames_budget --budget 16GiB --backbones vit_huge_patch14_224

For the baseline (whole ViViT-FE), the paper's Stage 2 (frozen spatial forward every step) and
cached Stage 2. On CUDA it measures (two real training steps per probe, bf16 autocast, SGD,
torch.cuda.max_memory_allocated) and prints the memory model's estimate beside each measured
count; without a GPU it can only estimate, and says so. `sfa-cache plan` is the same search.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, table
from sfa_cache.cost.frame_planner import PlanRow, plan_frames
from sfa_cache.cost.regimes import REGIME_LABELS
from sfa_cache.report import human_bytes, parse_size


def plan_cell(row: PlanRow) -> str:
    """A planner row as a table cell: 'N (peak)', '>= N (peak)' at the search cap, or 'none fit'."""
    if row.max_frames == 0:
        return "none fit"
    return (f">= {row.max_frames}" if row.capped else str(row.max_frames)) + f" ({human_bytes(row.peak_bytes)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="12GiB")
    p.add_argument("--backbones", nargs="+", default=["vit_base_patch16_224", "vit_large_patch16_224"])
    p.add_argument("--amp", default="bf16")
    p.add_argument("--cap", type=int, default=4096)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    budget = parse_size(args.budget)
    common = dict(device=device, amp=args.amp, cap=args.cap)
    estimated = plan_frames(args.backbones, budget, measure=False, **common)
    measured = (
        plan_frames(args.backbones, budget, measure=True, progress=print, **common) if device.type == "cuda" else None
    )

    rows = []
    for i, est in enumerate(estimated):
        rows.append(
            [
                est.backbone,
                REGIME_LABELS[est.regime],
                plan_cell(measured[i]) if measured else "no GPU: not measured",
                plan_cell(est),
            ]
        )
    print(f"\n{machine()}\nbudget {args.budget} ({human_bytes(budget)}), batch 1, 224 px, amp {args.amp}, SGD, "
          f"MLP adapter + 4-layer temporal; frame counts are multiples of 8 up to {args.cap}\n")
    print(table(["backbone", "regime", "measured max frames (peak)", "memory model max frames (peak)"], rows))


if __name__ == "__main__":
    main()
