"""Total training cost of the SFA recipe against the conventional baseline, as a ratio.

    python -m benchmarks.recipe_cost                                  # ViT-B, F = 32 (CPU) or 32 and 128 (CUDA)
    python -m benchmarks.recipe_cost --backbone vit_large_patch16_224 --frames 128 --epochs 30

Per clip and epoch, from per-step times measured like benchmarks.step_cost (same batch, fresh
process each):

* baseline           = E x t(whole ViViT-FE at F)
* SFA as in the paper = E1 x t(whole at 8) + E2 x t(frozen spatial forward + adapter/temporal at F)
* SFA with the cache  = E1 x t(whole at 8) + V x t(spatial forward at F, once) + E2 x t(cached step at F)

E1 = E2 = E by default (the paper's same-epochs comparison; it reports 0.56x for the paper form).
A further ablation on the same cache costs only E2 x t(cached step); the last column says how
many such Stage-2 runs fit in the budget of one baseline run. Decoding is left out of every
term (the baseline and Stage 1 decode every epoch, extraction once), which favours the baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import machine, table
from benchmarks.step_cost import measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument("--frames", type=int, nargs="+", default=[32, 128] if cuda else [32])
    p.add_argument("--stage1-frames", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30, help="E: the baseline's epochs")
    p.add_argument("--stage1-epochs", type=int, help="E1 [default: E]")
    p.add_argument("--stage2-epochs", type=int, help="E2 [default: E]")
    p.add_argument("--views", type=int, default=1, help="V: cached views per clip")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--amp", default=None, help="[default: bf16 on CUDA, none on the CPU]")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    args = p.parse_args()
    device = torch.device(args.device)
    amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    e, e1, e2 = args.epochs, args.stage1_epochs or args.epochs, args.stage2_epochs or args.epochs
    args.workdir.mkdir(parents=True, exist_ok=True)

    def seconds(kind: str, frames: int) -> float | None:
        m = measure(kind, args.backbone, frames, batch=args.batch, device=device, amp=amp, workdir=args.workdir,
                    image_size=args.image_size)
        print(f"  {kind} at {frames} frames: {m['skipped'] or '%.3g s/step' % m['seconds']}", flush=True)
        return None if m["seconds"] is None else m["seconds"] / args.batch  # per clip

    stage1 = seconds("baseline", args.stage1_frames)
    rows = []
    for frames in args.frames:
        full, paper, cached, extract = (seconds(k, frames) for k in ("baseline", "paper", "cached", "extract"))
        if None in (stage1, full, paper, cached, extract):
            rows.append([frames, "not measured (did not fit)", "", "", "", ""])
            continue
        base = e * full
        sfa_paper = e1 * stage1 + e2 * paper
        sfa_cache = e1 * stage1 + args.views * extract + e2 * cached
        rows.append(
            [
                frames, f"{base:.3g}", f"{sfa_paper:.3g} ({sfa_paper / base:.2f}x)",
                f"{sfa_cache:.3g} ({sfa_cache / base:.2f}x)",
                f"{e1 * stage1:.3g} + {args.views * extract:.3g} + {e2 * cached:.3g}", f"{base / (e2 * cached):.0f}",
            ]
        )
        print(rows[-1], flush=True)
    print(
        f"\n{machine()}\n{args.backbone} at {args.image_size} px, Stage 1 at {args.stage1_frames} frames, "
        f"E = {e}, E1 = {e1}, "
        f"E2 = {e2}, V = {args.views}, batch {args.batch}, amp {amp}, device {device}; seconds per training clip\n"
    )
    print(table(["F", "baseline (s)", "SFA, paper form (vs baseline)", "SFA + cache (vs baseline)",
                 "SFA + cache: Stage 1 + extract + Stage 2", "cached Stage-2 runs per baseline budget"], rows))


if __name__ == "__main__":
    main()
