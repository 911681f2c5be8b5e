"""Per-step time and peak memory of the three training regimes, side by side.

    python -m benchmarks.step_cost                                   # tiny / small / base x 8 / 32 / 128 frames
    python -m benchmarks.step_cost --backbones vit_base_patch16_224 --frames 32 128 --batch 1

(a) baseline: the whole ViViT-FE, forward + backward; (b) paper: the paper's Stage 2, the frozen
spatial ViT run without gradients every step, then adapter + temporal forward + backward;
(c) cached: adapter + temporal on features read from a real Zarr cache on disk (the read is
inside the timed step, in the training process: with DataLoader workers it would overlap).
All at the same batch (default 1) and image size (default 224 px), SGD with momentum; AMP bf16 on CUDA, fp32 on the CPU.
Every measurement runs in a fresh process: time with CUDA events on a GPU (perf_counter on the
CPU) after warm-up steps; peak memory is torch.cuda.max_memory_allocated on a GPU and the
peak-RSS increase of the process on the CPU. The memory model's estimate is printed next to it.
On the CPU a point whose estimated memory exceeds half the free RAM is not run, and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks.common import in_fresh_process, machine, random_feature_cache, seconds_per_step, table
from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.cost.memory_model import estimate_step_memory
from sfa_cache.cost.regimes import REGIMES, TrainStep, build_regime_model, regime_config, regime_input, spatial_shape
from sfa_cache.report import human_bytes
from sfa_cache.runtime import autocast, host_available_bytes

BACKBONES = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
CACHED_FRAMES = 128  # the benchmark caches hold this many frames; training samples F of them


def cache_reader(cache_dir: Path, frames: int, batch: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """Each call reads the next `batch` clips from the cache, as Stage 2's dataset does -> [B, F, D]."""
    dataset = CachedFeatureDataset(FeatureCache(cache_dir), frames, train=True)
    position = [0]

    def read() -> torch.Tensor:
        items = [dataset[(0, (position[0] + i) % len(dataset))][0] for i in range(batch)]
        position[0] += batch
        return torch.stack(items).to(device, non_blocking=True)
    return read


def extract_step(
    backbone: str, frames: int, image_size: int, batch: int, device: torch.device, amp: str
) -> Callable[[], None]:
    """What extraction costs per clip: the spatial forward without gradients (decoding excluded)."""
    cfg = regime_config(backbone, frames, image_size=image_size)
    model = build_regime_model("paper", cfg, device)
    x = regime_input("paper", cfg, batch, device)

    def step() -> None:
        with torch.no_grad(), autocast(device, amp):
            model.encode_frames(x)
    return step


def time_step(kind: str, backbone: str, frames: int, image_size: int, batch: int, device_name: str, amp: str,
              cache_dir: Optional[str]) -> float:
    """Seconds per step of `kind` (a regime, or 'extract'); runs inside a fresh process."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    if kind == "extract":
        step = extract_step(backbone, frames, image_size, batch, device, amp)
    else:
        cfg = regime_config(backbone, frames, image_size=image_size)
        reader = cache_reader(Path(cache_dir), frames, batch, device) if kind == "cached" and cache_dir else None
        step = TrainStep(kind, cfg, batch, device, amp=amp, inputs=reader)
    slow = kind != "cached" and device.type == "cpu"
    return seconds_per_step(step, device, warmup=1 if slow else 3, steps=2 if slow else 10)


def benchmark_cache(workdir: Path, backbone: str, frames: int) -> Path:
    """A real 64-clip cache at the backbone's width with at least `CACHED_FRAMES` frames (made once)."""
    dim, frames = spatial_shape(backbone, 224).width, max(frames, CACHED_FRAMES)
    return random_feature_cache(
        workdir / f"step-cost-cache-{dim}d-{frames}f", clips=64, views=1, frames=frames, dim=dim
    )


def measure(kind: str, backbone: str, frames: int, *, batch: int, device: torch.device, amp: str,
            workdir: Path, image_size: int = 224) -> dict:
    """{'seconds', 'peak', 'estimate', 'skipped'} for one point; a CPU point that would not fit is skipped."""
    estimate = None
    if kind in REGIMES:
        estimate = estimate_step_memory(
            kind, regime_config(backbone, frames, image_size=image_size), batch=batch, amp=amp
        ).total
        if device.type == "cpu" and estimate > host_available_bytes() / 2:
            return {
                "seconds": None,
                "peak": None,
                "estimate": estimate,
                "skipped": f"not run: est. {human_bytes(estimate)}",
            }
    cache_dir = str(benchmark_cache(workdir, backbone, frames)) if kind == "cached" else None
    seconds, peak = in_fresh_process(time_step, kind, backbone, frames, image_size, batch, str(device), amp, cache_dir,
                                     device=device)
    return {"seconds": seconds, "peak": peak, "estimate": estimate, "skipped": "OOM" if seconds is None else None}


def _seconds(m: dict) -> str:
    return m["skipped"] or (f"{m['seconds']:.3g}")


def _ratio(a: dict, b: dict) -> str:
    return "n/a" if a["seconds"] is None or b["seconds"] is None else f"{a['seconds'] / b['seconds']:.0f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    p.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default=None, help="none | bf16 | fp16 [default: bf16 on CUDA, none on the CPU]")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    args = p.parse_args()
    device = torch.device(args.device)
    amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    args.workdir.mkdir(parents=True, exist_ok=True)

    time_rows, memory_rows = [], []
    for backbone in args.backbones:
        for frames in args.frames:
            m = {k: measure(k, backbone, frames, batch=args.batch, device=device, amp=amp, workdir=args.workdir,
                            image_size=args.image_size)
                 for k in REGIMES}
            b, pa, c = m["baseline"], m["paper"], m["cached"]
            time_rows.append([backbone, frames, _seconds(b), _seconds(pa), _seconds(c), _ratio(b, c), _ratio(pa, c)])
            memory_rows.append(
                [backbone, frames]
                + [
                    m[k]["skipped"] or f"{human_bytes(m[k]['peak'])} (est. {human_bytes(m[k]['estimate'])})"
                    for k in REGIMES
                ]
            )
            print(time_rows[-1], memory_rows[-1], flush=True)
    what = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak-RSS increase of the process"
    print(
        f"\n{machine()}\nbatch {args.batch}, {args.image_size} px, amp {amp}, SGD, MLP adapter + 4-layer temporal, "
        f"device {device}\n"
    )
    print(table(["spatial", "frames", "(a) baseline s/step", "(b) paper Stage 2 s/step", "(c) cached Stage 2 s/step",
                 "(a)/(c)", "(b)/(c)"], time_rows))
    print(f"\nPeak memory ({what}; in brackets the memory model's estimate)\n")
    print(table(["spatial", "frames", "(a) baseline", "(b) paper Stage 2", "(c) cached Stage 2"], memory_rows))


if __name__ == "__main__":
    main()
