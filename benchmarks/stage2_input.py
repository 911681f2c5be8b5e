"""How fast each Stage-2 feed delivers training inputs, beside what the bytes allow (CPU).

    python -m benchmarks.stage2_input                 # ViT-B width, 2 views x 128 frames, T=32, batch 64
    python -m benchmarks.stage2_input --clips 512     # quicker

No model runs: this is the input side alone, in clips/s of [B, T, D] float32 batches ready for
the model. Rows, all over the same real cache (float16, blosc, 256 clips per shard):

* in-RAM gather limit: the cache's float16 bytes as one numpy array in this process, a random
  view and T random frames of B random clips gathered per batch (the reference: what the bytes
  allow on one core);
* per-clip loader: `CachedFeatureDataset` through `make_loader` with `--workers` processes (how
  Stage 2 read its cache before the resident store);
* resident (ram): `ResidentBatches` over a host copy (load time reported apart);
* streaming: `StreamingBatches`, whole shards by `--workers` processes, windows of
  `--window` shards.

Each feed runs one warm-up epoch (it pays worker start-up), then whole epochs until `--seconds`
have passed; clips/s is over those. A resident epoch of 2,048 clips takes about 15 ms, so one
epoch alone measured anything from 0.3x to 1x the gather limit on this VM.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, random_feature_cache, table
from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.feeds.epochs import WindowedEpochSampler
from sfa_cache.cache.feeds.resident import ResidentBatches, load_resident
from sfa_cache.cache.feeds.streaming import StreamingBatches
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.data.loaders import make_loader
from sfa_cache.runtime import keep_freed_host_memory

CPU = torch.device("cpu")


def _epoch(batches, sampler, epoch: int) -> int:
    """Clips of one epoch (each batch checked to be contiguous float32, as the model takes it)."""
    sampler.set_epoch(epoch)
    n = 0
    for x, y, _ in batches:
        assert x.dtype == torch.float32 and x.is_contiguous()
        n += len(y)
    return n


def _rate(batches, sampler, seconds: float) -> float:
    """clips/s over whole epochs after a warm-up one, for at least `seconds`."""
    _epoch(batches, sampler, 0)
    epoch, n, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        epoch += 1
        n += _epoch(batches, sampler, epoch)
    return n / (time.perf_counter() - t0)


def gather_limit(cache: FeatureCache, frames: int, batch: int, seconds: float = 5.0) -> float:
    """clips/s of random fancy-index gathers from the whole cache held as one float16 array."""
    array = np.concatenate([cache.shard_features(s) for s in range(len(cache.shards))])  # [N, V, F, D]
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        clips = rng.integers(0, len(array), batch)
        views = rng.integers(0, array.shape[1], batch)
        idx = np.sort(rng.integers(0, array.shape[2], (batch, frames)), axis=1)
        x = np.ascontiguousarray(array[clips[:, None], views[:, None], idx])  # [B, T, D] float16
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=2048)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--cached-frames", type=int, default=128)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--window", type=int, default=4, help="shards per shuffle window (streaming's unit of order)")
    p.add_argument("--seconds", type=float, default=3.0, help="time each feed for at least this long")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    p.add_argument("--glibc-defaults", action="store_true",
                   help="leave glibc's malloc thresholds as they are (training on the CPU raises them: fit)")
    args = p.parse_args()
    if not args.glibc_defaults:
        keep_freed_host_memory()  # as `fit` does for CPU training; applies to every row alike

    cache = FeatureCache(random_feature_cache(args.workdir / f"input-{args.clips}-{args.dim}", args.clips, 2,
                                              args.cached_frames, args.dim))
    dataset = CachedFeatureDataset(cache, args.frames, train=True)

    def sampler() -> WindowedEpochSampler:
        return WindowedEpochSampler(dataset.shard_of, window=args.window, shuffle=True)

    limit = gather_limit(cache, args.frames, args.batch)
    rows = [["in-RAM gather limit (float16 array, one process)", f"{limit:.0f}", "1.00", ""]]

    s = sampler()
    loader = make_loader(dataset, s, batch_size=args.batch, num_workers=args.workers, device=CPU)
    per_clip = _rate(loader, s, args.seconds)
    rows.append([f"per-clip loader ({args.workers} workers), before", f"{per_clip:.0f}", f"{per_clip / limit:.3f}", ""])
    del loader

    t0 = time.perf_counter()
    store = load_resident(cache, (0, 1), device=CPU, progress=False)
    load_s = time.perf_counter() - t0
    s = sampler()
    resident = _rate(ResidentBatches(store, s, dataset.selection, batch_size=args.batch, device=CPU), s, args.seconds)
    rows.append(["resident (ram)", f"{resident:.0f}", f"{resident / limit:.3f}",
                 f"load {load_s:.1f} s ({store.nbytes / 2**30:.2f} GiB)"])
    del store

    s = sampler()
    streaming = StreamingBatches(dataset, s, batch_size=args.batch, num_workers=args.workers, device=CPU)
    stream = _rate(streaming, s, args.seconds)
    rows.append([f"streaming ({args.workers} workers, windows of {args.window} shards)", f"{stream:.0f}",
                 f"{stream / limit:.3f}", f"{stream / per_clip:.1f}x the per-clip loader"])

    print(f"\n{machine()}\n{args.clips} clips x 2 views x {args.cached_frames} cached frames, D={args.dim}, float16, "
          f"blosc, {len(cache.shards)} shards; batches of {args.batch} x {args.frames} frames, float32 out; "
          f"whole epochs for >= {args.seconds:g} s after a warm-up one\n")
    print(table(["feed", "clips/s", "vs gather limit", "note"], rows))


if __name__ == "__main__":
    main()
