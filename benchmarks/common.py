"""Shared helpers: describe the machine, make a benchmark dataset, print markdown tables."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import torch

from sfa_cache.data.synthetic import SyntheticConfig, make_synthetic


def machine() -> str:
    """One line: date, CPU model and cores, GPU and driver when used, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [datetime.date.today().isoformat(), f"{cpu} x {os.cpu_count()} cores"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    else:
        parts.append("no GPU")
    import timm
    import zarr

    parts.append(f"torch {torch.__version__}, timm {timm.__version__}, zarr {zarr.__version__}")
    return "; ".join(parts)


def benchmark_dataset(root: Path, *, per_class: int, frames: int, size: int = 64) -> Path:
    """A synthetic dataset (reused when already there); returns its train manifest."""
    cfg = SyntheticConfig(train_per_class=per_class, val_per_class=1, num_frames=frames, size=size)
    return make_synthetic(root, cfg)["train"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
