"""Cached Stage 2 on its own: peak memory at long clips, and whether the Zarr reader keeps up.

    python -m benchmarks.stage2_throughput memory  # Stage-2 peak memory at F = 128, ViT-B and ViT-L widths
    python -m benchmarks.stage2_throughput reader  # cached training: real Zarr reader vs features in memory

(Step time against the baseline and the paper's Stage 2 is benchmarks.step_cost.) Training is
the MLP adapter + a 4-layer temporal transformer with the backbone's width, SGD. Peak memory is
torch.cuda.max_memory_allocated on a GPU and the peak-RSS increase of a fresh process on the CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import in_fresh_process, machine, random_feature_cache, table
from sfa_cache.cache.dataset import CachedFeatureDataset
from sfa_cache.cache.reader import FeatureCache
from sfa_cache.cost.regimes import TrainStep, build_regime_model, regime_config, spatial_shape
from sfa_cache.data.batches import EpochSampler
from sfa_cache.data.loaders import make_loader
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


def reader_section(args: argparse.Namespace, device: torch.device) -> None:
    dim = spatial_shape(args.backbone, 224).width
    cache = FeatureCache(random_feature_cache(args.workdir / "reader-cache", args.clips, 2, 128, dim))
    dataset = CachedFeatureDataset(cache, args.train_frames, train=True)
    memory = [dataset[(0, i)] for i in range(len(dataset))]  # the same items, decoded once, in RAM
    model = build_regime_model("cached", regime_config(args.backbone, args.train_frames), device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train(batches) -> float:
        n, t0 = 0, time.perf_counter()
        for x, y in batches:
            loss = F.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    def in_memory():
        for i in range(0, len(memory), args.batch_reader):
            xs, ys = zip(*memory[i : i + args.batch_reader])
            yield torch.stack(xs), torch.tensor(ys)

    sampler = EpochSampler(len(dataset), shuffle=True)
    loader = make_loader(dataset, sampler, batch_size=args.batch_reader, num_workers=args.workers, device=device)
    zarr_rates = []
    for epoch in range(2):  # the first epoch pays for worker start-up
        sampler.set_epoch(epoch)
        zarr_rates.append(train((x, y) for x, y, _ in loader))
    mem_rate = max(train(in_memory()) for _ in range(2))
    print(f"\n{machine()}\n{args.clips} clips x 2 views x 128 cached frames, D={dim}, float16, blosc; training at "
          f"{args.train_frames} frames, batch {args.batch_reader}, {args.workers} reader workers, device {device}\n")
    print(
        table(
            ["features from", "clips/s (epoch 2)", "vs in memory"],
            [
                [
                    "Zarr cache (FeatureCache in DataLoader workers)",
                    f"{zarr_rates[-1]:.1f}",
                    f"{zarr_rates[-1] / mem_rate:.2f}",
                ],
                ["already in memory", f"{mem_rate:.1f}", "1.00"],
            ],
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section", choices=["memory", "reader"])
    p.add_argument("--backbone", default="vit_base_patch16_224", choices=list(BACKBONES))
    p.add_argument("--batch-memory", type=int, default=8)
    p.add_argument("--clips", type=int, default=512)
    p.add_argument("--train-frames", type=int, default=32)
    p.add_argument("--batch-reader", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    {"memory": memory_section, "reader": reader_section}[args.section](args, device)


if __name__ == "__main__":
    main()
