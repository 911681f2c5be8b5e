"""Stage-2 cost: cached training against the paper's Stage 2 and the full baseline; memory; reader.

    python -m benchmarks.stage2_throughput steps   # clips/s: cached vs frozen-forward vs full, F = 32, 128
    python -m benchmarks.stage2_throughput memory  # Stage-2 peak memory at F = 128, ViT-B and ViT-L widths
    python -m benchmarks.stage2_throughput reader  # cached training: real Zarr reader vs features in memory

Every regime trains the same adapter (MLP) + temporal transformer (4 layers, the paper's heads and
MLP width for the spatial width) with SGD; "paper" runs the frozen spatial ViT (no grad) every
step, "full" trains all of ViViT-FE. Timing with CUDA events on a GPU, perf_counter on the CPU;
peak memory is torch.cuda.max_memory_allocated on a GPU and the peak-RSS increase of a fresh
process on the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import machine, table
from sfa_cache.atomic import atomic_write_json
from sfa_cache.cache import layout
from sfa_cache.cache.dataset import CachedFeatureDataset
from sfa_cache.cache.reader import FeatureCache
from sfa_cache.cache.writer import ShardData, write_shard
from sfa_cache.data.loaders import make_loader
from sfa_cache.data.video_dataset import EpochSampler
from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig
from sfa_cache.models.vivit import ViViTFE

WIDTHS = {"vit_base_patch16_224": (768, 12, 3072), "vit_large_patch16_224": (1024, 16, 4096)}


def model_config(backbone: str, frames: int, image_size: int = 224) -> ViViTConfig:
    dim, heads, mlp = WIDTHS[backbone]
    return ViViTConfig(num_classes=400, spatial=SpatialConfig(backbone=backbone, image_size=image_size, frame_chunk=32),
                       adapter=AdapterConfig("mlp"),
                       temporal=TemporalConfig(num_frames=frames, depth=4, num_heads=heads, mlp_dim=mlp),
                       embed_dim=dim)


def step_fn(regime: str, cfg: ViViTConfig, batch: int, device: torch.device) -> Callable[[], None]:
    """One optimiser step of `regime` on random inputs already on the device."""
    frames, dim = cfg.temporal.num_frames, cfg.embed_dim
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    if regime == "cached":
        model = ViViTFE(cfg, with_spatial=False).to(device)
        x = torch.randn(batch, frames, dim, device=device)
        forward = lambda: model(x)  # noqa: E731
    else:
        model = ViViTFE(cfg).to(device)
        x = torch.randn(batch, frames, 3, cfg.spatial.image_size, cfg.spatial.image_size, device=device)
        if regime == "paper":
            model.freeze_spatial()

            def forward() -> torch.Tensor:
                with torch.no_grad():
                    tokens = model.encode_frames(x)
                return model.forward_head(model.forward_tokens(tokens))
        else:
            forward = lambda: model(x)  # noqa: E731
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(forward(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def seconds_per_step(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
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


def steps_section(args: argparse.Namespace, device: torch.device) -> None:
    """Clips/s per regime, every regime at `--batch` (like for like), and cached training also at
    `--batch-cached`, the batch it would really use (its steps are tiny). Each measurement has
    warm-up steps first; the frame-based regimes on a CPU take one warm-up and two timed steps."""
    batch = args.batch or (8 if device.type == "cuda" else 1)
    rows = []
    for frames in args.frames:
        cfg = model_config(args.backbone, frames)
        rate = {}
        for regime, b in (("cached", batch), ("cached", args.batch_cached), ("paper", batch), ("full", batch)):
            if regime == "full" and device.type == "cpu" and frames > args.cpu_full_max_frames:
                rate[(regime, b)] = None  # activations of a full backward would not fit this machine's RAM
                continue
            slow = regime != "cached" and device.type == "cpu"
            step = step_fn(regime, cfg, b, device)
            rate[(regime, b)] = b / seconds_per_step(step, device, warmup=1 if slow else 3, steps=2 if slow else 10)
            del step
        fmt = lambda r: "n/a" if r is None else f"{r:.3g}"  # noqa: E731
        ratio = lambda a, r: "n/a" if r is None else f"{a / r:.0f}x"  # noqa: E731
        same, best = rate[("cached", batch)], rate[("cached", args.batch_cached)]
        paper, full = rate[("paper", batch)], rate[("full", batch)]
        rows.append([frames, fmt(same), fmt(best), fmt(paper), fmt(full), ratio(same, paper), ratio(best, paper),
                     ratio(same, full), ratio(best, full)])
        print(rows[-1], flush=True)
    print(f"\n{machine()}\n{args.backbone} spatial at 224 px, adapter + 4-layer temporal, device {device}\n")
    print(table(["frames", f"cached clips/s (batch {batch})", f"cached clips/s (batch {args.batch_cached})",
                 f"paper Stage 2 clips/s (batch {batch})", f"full baseline clips/s (batch {batch})",
                 "cached / paper (same batch)", f"cached (batch {args.batch_cached}) / paper",
                 "cached / full (same batch)", f"cached (batch {args.batch_cached}) / full"], rows))


def _memory_child(backbone: str, frames: int, batch: int, device: str, queue: multiprocessing.Queue) -> None:
    dev = torch.device(device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = step_fn("cached", model_config(backbone, frames), batch, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        step()
    if dev.type == "cuda":
        queue.put(torch.cuda.max_memory_allocated() / 2**20)
    else:
        queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)


def memory_section(args: argparse.Namespace, device: torch.device) -> None:
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for backbone in WIDTHS:
        queue = ctx.Queue()
        p = ctx.Process(target=_memory_child, args=(backbone, 128, args.batch_memory, str(device), queue))
        p.start()
        mb = queue.get()
        p.join()
        rows.append([backbone, WIDTHS[backbone][0], 128, args.batch_memory, f"{mb:.0f}"])
    what = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS increase of the training process"
    print(f"\n{machine()}\ncached Stage 2 (MLP adapter + 4-layer temporal), SGD, {what}\n")
    print(table(["spatial backbone", "D", "frames", "batch", "peak MiB"], rows))


def _fake_cache(root: Path, clips: int, views: int, frames: int, dim: int) -> FeatureCache:
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    shards = []
    for plan in layout.plan_shards(clips, 256):
        data = ShardData.empty(plan.size, views, frames, dim, "float16")
        data.features[:] = rng.standard_normal(data.features.shape, dtype=np.float32)
        data.valid[:] = True
        data.labels[:] = rng.integers(0, 400, plan.size)
        data.frame_index[:] = 0
        write_shard(layout.shard_path(root, plan.index), data)
        shards.append({"index": plan.index, "start": plan.start, "stop": plan.stop, "checksum": data.checksum()})
    atomic_write_json(root / layout.CACHE_FILE, {"format": layout.CACHE_FORMAT, "num_clips": clips, "views": views,
                                                 "frames": frames, "dim": dim, "dtype": "float16", "shards": shards,
                                                 "classes": [str(i) for i in range(400)], "fingerprint": "sha256:bench"})
    return FeatureCache(root)


def reader_section(args: argparse.Namespace, device: torch.device) -> None:
    dim = WIDTHS[args.backbone][0]
    cache = _fake_cache(args.workdir / "reader-cache", args.clips, 2, 128, dim)
    dataset = CachedFeatureDataset(cache, args.train_frames, train=True)
    memory = [dataset[(0, i)] for i in range(len(dataset))]  # the same items, decoded once, in RAM
    model = ViViTFE(model_config(args.backbone, args.train_frames), with_spatial=False).to(device)
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
    print(table(["features from", "clips/s (epoch 2)", "vs in memory"],
                [["Zarr cache (FeatureCache in DataLoader workers)", f"{zarr_rates[-1]:.1f}", f"{zarr_rates[-1] / mem_rate:.2f}"],
                 ["already in memory", f"{mem_rate:.1f}", "1.00"]]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section", choices=["steps", "memory", "reader"])
    p.add_argument("--backbone", default="vit_base_patch16_224", choices=list(WIDTHS))
    p.add_argument("--frames", type=int, nargs="+", default=[32, 128])
    p.add_argument("--batch", type=int, help="clips per step of every regime in `steps` [default: 1 on CPU, 8 on CUDA]")
    p.add_argument("--batch-cached", type=int, default=32, help="the batch cached training is also measured at")
    p.add_argument("--batch-memory", type=int, default=8)
    p.add_argument("--cpu-full-max-frames", type=int, default=32, help="skip the full baseline above this on the CPU (RAM)")
    p.add_argument("--clips", type=int, default=512)
    p.add_argument("--train-frames", type=int, default=32)
    p.add_argument("--batch-reader", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    {"steps": steps_section, "memory": memory_section, "reader": reader_section}[args.section](args, device)


if __name__ == "__main__":
    main()
