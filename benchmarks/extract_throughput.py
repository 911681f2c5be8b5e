"""Extraction throughput (frames/s) against the bare spatial forward on the same device and batch.

The bare forward runs the backbone on random frames already in device memory; extraction adds
decoding, transforms, batching and writing. Their ratio says how often the model waits.

    python -m benchmarks.extract_throughput --workdir /tmp/sfa-bench
    python -m benchmarks.extract_throughput --backbone vit_base_patch16_224 --batch-frames 512 \\
        --clips-per-class 40   # GPU
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from benchmarks.common import benchmark_dataset, machine, table
from sfa_cache.distributed import DistInfo, rank_device
from sfa_cache.models.config import SpatialConfig
from sfa_cache.models.spatial import SpatialTransformer
from sfa_cache.pipelines.extract import _resolve_amp, run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.runtime import autocast


def bare_forward(
    backbone: str, image_size: int, batch_frames: int, device: torch.device, amp: str, seconds: float = 10.0
) -> float:
    """Frames/s of the backbone alone on random inputs already on the device."""
    model = SpatialTransformer(SpatialConfig(backbone=backbone, image_size=image_size)).backbone.to(device).eval()
    x = torch.randn(batch_frames, 3, image_size, image_size, device=device)
    done, t0 = 0, None
    with torch.inference_mode(), autocast(device, amp):
        for step in range(10**9):
            model(x).float().cpu()  # the same sync point as the extractor's encode
            if step == 1:  # two warm-up calls
                t0 = time.perf_counter()
            elif step > 1:
                done += batch_frames
                if time.perf_counter() - t0 > seconds:
                    break
    return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    p.add_argument("--backbone", default="vit_tiny_patch16_224")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--clips-per-class", type=int, default=4)
    p.add_argument("--batch-frames", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    device = rank_device(args.device, DistInfo())
    amp = _resolve_amp("auto", device)
    manifest = benchmark_dataset(
        args.workdir / f"data-64f-{args.clips_per_class}", per_class=args.clips_per_class, frames=64
    )
    bare = bare_forward(args.backbone, args.image_size, args.batch_frames, device, amp)
    root = args.workdir / "throughput-caches"
    shutil.rmtree(root, ignore_errors=True)
    result = run_extract(ExtractConfig(backbone=args.backbone, image_size=args.image_size, manifest=str(manifest),
                                       cache_root=str(root), frames=args.frames, batch_frames=args.batch_frames,
                                       num_workers=args.num_workers, device=args.device))
    print(f"\n{machine()}")
    print(
        f"{args.backbone} at {args.image_size} px, amp {amp}, batch {args.batch_frames} frames, "
        f"{args.frames} frames/clip, "
        f"{result.clips} clips, {args.num_workers} decode workers\n"
    )
    print(table(["bare forward frames/s", "extraction frames/s", "ratio", "model busy", "extraction wall s"],
                [[f"{bare:.1f}", f"{result.frames_per_second:.1f}", f"{result.frames_per_second / bare:.2f}",
                  f"{result.model_busy:.2f}", f"{result.seconds:.1f}"]]))


if __name__ == "__main__":
    main()
