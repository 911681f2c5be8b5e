"""Cache size on disk and random-read speed for each compressor, on real extracted features.

Extracts `--clips` clips x 2 views x `--frames` frames with a ViT (default ViT-B, D=768) once,
then writes the same features as caches of 1 and 2 views with each compressor and measures
bytes per clip and random single-clip reads through `FeatureCache` (what Stage-2 workers do).

    python -m benchmarks.cache_io --workdir /tmp/sfa-bench
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import benchmark_dataset, machine, table, write_feature_cache
from sfa_cache.cache.format import layout
from sfa_cache.cache.format.codecs import COMPRESSORS
from sfa_cache.cache.format.read import FeatureCache, read_shard
from sfa_cache.cache.format.write import ShardData
from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig


def random_reads(root: Path, reads: int, seed: int = 0) -> tuple[float, float]:
    """(clips/s, median ms) for single-clip reads in random order, from a freshly opened cache."""
    cache = FeatureCache(root)
    order = np.random.default_rng(seed).integers(0, len(cache), reads)
    cache.features(int(order[0]))  # open the store once, as a long-lived worker would have
    times = []
    for i in order:
        t0 = time.perf_counter()
        cache.features(int(i))
        times.append(time.perf_counter() - t0)
    return reads / sum(times), 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument(
        "--image-size", type=int, default=64, help="small frames keep the CPU extraction short; D is unchanged"
    )
    p.add_argument("--per-class", type=int, default=2, help="clips per class (7 classes)")
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--clips-per-shard", type=int, default=8)
    p.add_argument("--reads", type=int, default=300)
    args = p.parse_args()

    manifest = benchmark_dataset(
        args.workdir / f"data-{args.frames}f-{args.per_class}", per_class=args.per_class, frames=args.frames
    )
    result = run_extract(ExtractConfig(backbone=args.backbone, image_size=args.image_size, manifest=str(manifest),
                                       cache_root=str(args.workdir / "caches"), frames=args.frames, views=2,
                                       compressor="none", clips_per_shard=1024, num_workers=1))
    shards = [read_shard(layout.shard_path(result.cache_dir, i)) for i in range(result.shards)]
    full = ShardData(**{k: np.concatenate([s.arrays()[k] for s in shards]) for k in shards[0].arrays()})
    n, _, f, d = full.features.shape
    rows = []
    for views in (1, 2):
        data = ShardData(full.features[:, :views].copy(), full.labels, full.clip_index,
                         full.frame_index[:, :views].copy(), full.valid)
        raw = views * f * d * data.features.itemsize
        for compressor in COMPRESSORS:
            root = args.workdir / f"io-{views}v-{compressor}"
            cache_dir, seconds = write_feature_cache(root, data, compressor, args.clips_per_shard)
            size = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) / n
            clips_s, median_ms = random_reads(cache_dir, args.reads)
            rows.append(
                [
                    views, compressor, f"{size / 1024:.1f}", f"{size / raw:.3f}", f"{n * raw / seconds / 2**20:.0f}",
                    f"{clips_s:.0f}", f"{median_ms:.2f}", f"{clips_s * raw / 2**20:.0f}",
                ]
            )
    print(f"\n{machine()}")
    print(
        f"{args.backbone} (D={d}) at {args.image_size} px, {f} frames, float16, {n} clips, "
        f"{args.clips_per_shard} clips/shard\n"
    )
    print(table(["views", "compressor", "KiB/clip on disk", "vs raw", "write MiB/s", "random reads clips/s",
                 "median ms/read", "read MiB/s (decoded)"], rows))


if __name__ == "__main__":
    main()
