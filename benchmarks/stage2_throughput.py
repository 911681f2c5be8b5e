"""Cached Stage 2 on its own: peak memory at long clips.

    python -m benchmarks.stage2_throughput memory  # Stage-2 peak memory at F = 128, ViT-B and ViT-L widths

(Step time against the baseline and the paper's Stage 2 is benchmarks.step_cost; how fast each
feed delivers cached features is benchmarks.stage2_input.) Training is
the MLP adapter + a 4-layer temporal transformer with the backbone's width, SGD. Peak memory is
torch.cuda.max_memory_allocated on a GPU and the peak-RSS increase of a fresh process on the CPU.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import in_fresh_process, machine, table
from sfa_cache.cost.regimes import TrainStep, regime_config, spatial_shape
from sfa_cache.report import human_bytes

BACKBONES = ("vit_base_patch16_224", "vit_large_patch16_224")


def _three_steps(backbone: str, frames: int, batch: int, device: str) -> None:
    step = TrainStep("cached", regime_config(backbone, frames), batch, torch.device(device))
    for _ in range(3):
        step()


def memory_section(args: argparse.Namespace, device: torch.device) -> None:
    rows = []
    for backbone in BACKBONES:
        _, peak = in_fresh_process(_three_steps, backbone, 128, args.batch_memory, str(device), device=device)
        rows.append([backbone, spatial_shape(backbone, 224).width, 128, args.batch_memory, human_bytes(peak)])
    what = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS increase of the training process"
    print(f"\n{machine()}\ncached Stage 2 (MLP adapter + 4-layer temporal), SGD, {what}\n")
    print(table(["spatial backbone", "D", "frames", "batch", "peak"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section", choices=["memory"])
    p.add_argument("--backbone", default="vit_base_patch16_224", choices=list(BACKBONES))
    p.add_argument("--batch-memory", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    memory_section(args, device)


if __name__ == "__main__":
    main()
