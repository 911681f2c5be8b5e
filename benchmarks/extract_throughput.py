"""Extraction throughput (frames/s) against the bare spatial forward on the same device and batch.

The bare forward runs the backbone on random frames already in device memory; extraction adds
decoding, transforms, batching and writing. Their ratio says how often the model waits.

It also gives the bytes one clip's frames take through the decode pool: uint8 (what workers ship
now; `encode` normalises on the device) against float32 (normalised in the workers, as before),
4x by construction. `--compare-transport` runs the extraction a second time with float32
transport (`FloatTransportExtractor`) and reports both frames/s, measured in the same run.

    python -m benchmarks.extract_throughput --workdir /tmp/sfa-bench
    python -m benchmarks.extract_throughput --compare-transport --clips-per-class 2 --frames 16
    python -m benchmarks.extract_throughput --backbone vit_base_patch16_224 --batch-frames 512 \\
        --clips-per-class 40   # GPU
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from benchmarks.common import bare_forward, benchmark_dataset, machine, table
from sfa_cache.cache.extraction.decode_jobs import ClipJob, decode_float_views, decode_views
from sfa_cache.cache.extraction.extractor import ShardExtractor
from sfa_cache.data.decode_pool import DecodePool
from sfa_cache.data.manifest import infer_classes, read_manifest
from sfa_cache.distributed import DistInfo, rank_device
from sfa_cache.pipelines.extract import ExtractResult, run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.runtime import autocast, resolve_amp
from sfa_cache.video.clips import ClipSpec


class FloatTransportExtractor(ShardExtractor):
    """The transport before uint8, for comparison only: workers normalise and ship float32
    frames [V, F, 3, S, S]; `encode` only moves them to the device."""

    decode = staticmethod(decode_float_views)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """float32 [N, 3, S, S], normalised -> [N, D] on the device."""
        with autocast(self.device, self.cfg.amp):
            return self.backbone(frames.to(self.device, non_blocking=True))


def transport_bytes(views: int, frames: int, image_size: int) -> dict[str, int]:
    """Bytes of one clip's frames [V, F, 3, S, S] through the decode pool, per transport dtype.
    The element count is the same; only the element size differs (uint8 1, float16 2, float32 4)."""
    n = views * frames * 3 * image_size * image_size
    return {"uint8": n, "float16": 2 * n, "float32": 4 * n}


def start_forkserver(video: Path) -> None:
    """Decode one clip through a one-worker pool, untimed. The forkserver that every decode worker
    forks from starts once per process, importing its preload modules (seconds); started here, it
    is not charged to whichever extraction runs first."""
    spec = ClipSpec(frames=1, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pool = DecodePool(decode_views, workers=1, timeout=None)  # preloads decode_views' module
    for _ in pool.imap([ClipJob(0, video, spec)]):
        pass


def extract_with(transport: str, cfg: ExtractConfig) -> ExtractResult:
    """`run_extract(cfg)` with the given frame transport: "uint8" (the engine as it is) or
    "float32" (`FloatTransportExtractor` swapped in for this call)."""
    if transport == "uint8":
        return run_extract(cfg)
    return run_extract(cfg, engine=FloatTransportExtractor)


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
    p.add_argument("--compare-transport", action="store_true",
                   help="also extract with float32 frames through the pool (as before uint8) and compare frames/s")
    args = p.parse_args()

    device = rank_device(args.device, DistInfo())
    amp = resolve_amp("auto", device)
    manifest = benchmark_dataset(
        args.workdir / f"data-64f-{args.clips_per_class}", per_class=args.clips_per_class, frames=64
    )
    bare = bare_forward(args.backbone, args.image_size, args.batch_frames, device, amp)
    if args.num_workers > 0:
        start_forkserver(read_manifest(manifest, infer_classes(manifest)).entries[0].path)
    results: dict[str, ExtractResult] = {}
    for transport in ("uint8", "float32") if args.compare_transport else ("uint8",):
        root = args.workdir / f"throughput-caches-{transport}"  # the same key: each run needs its own root
        shutil.rmtree(root, ignore_errors=True)
        cfg = ExtractConfig(backbone=args.backbone, image_size=args.image_size, manifest=str(manifest),
                            cache_root=str(root), frames=args.frames, batch_frames=args.batch_frames,
                            num_workers=args.num_workers, device=args.device)
        results[transport] = extract_with(transport, cfg)
    result = results["uint8"]
    print(f"\n{machine()}")
    print(
        f"{args.backbone} at {args.image_size} px, amp {amp}, batch {args.batch_frames} frames, "
        f"{args.frames} frames/clip, "
        f"{result.clips} clips, {args.num_workers} decode workers\n"
    )
    print(table(["bare forward frames/s", "extraction frames/s", "ratio", "model busy", "extraction wall s"],
                [[f"{bare:.1f}", f"{result.frames_per_second:.1f}", f"{result.frames_per_second / bare:.2f}",
                  f"{result.model_busy:.2f}", f"{result.seconds:.1f}"]]))
    sizes = transport_bytes(1, args.frames, args.image_size)
    print(f"\nFrames through the decode pool, per clip (1 view x {args.frames} frames x 3 x {args.image_size}^2): "
          "uint8 is exactly 1/4 of float32 by construction (same elements, 1 byte instead of 4)\n")
    rows = []
    for transport in ("uint8", "float16", "float32"):
        run = results.get(transport)
        rows.append([transport, f"{sizes[transport]:,}", f"{sizes[transport] / sizes['uint8']:.0f}x",
                     f"{run.frames_per_second:.1f}" if run else "-", f"{run.model_busy:.2f}" if run else "-",
                     f"{run.seconds:.1f}" if run else "-"])
    print(table(["transport", "bytes/clip", "vs uint8", "extraction frames/s", "model busy", "wall s"], rows))
    if "float32" in results:
        ratio = results["uint8"].frames_per_second / results["float32"].frames_per_second
        print(f"\nextraction frames/s, uint8 / float32 transport: {ratio:.2f}")
    print("float16: what workers shipped under CUDA AMP before uint8 (not run here)")


if __name__ == "__main__":
    main()
