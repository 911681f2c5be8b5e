"""A run's progress while it trains: RUN/train_state.pt, RUN/metrics.jsonl and RUN/failures.jsonl.

train_state.pt is written last in an epoch and marks it as done; metrics.jsonl is appended one
short line at a time (a torn last line is dropped on reading). Every whole-file write is atomic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.atomic import atomic_write, atomic_write_text
from sfa_cache.data.failures import FAILURES_FILE
from sfa_cache.jsonl import append_jsonl, read_jsonl

TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


def failures_file(run_dir: str | os.PathLike) -> Path:
    """RUN/failures.jsonl: the clips that could not be loaded while it trained."""
    return Path(run_dir) / FAILURES_FILE


def reset_metrics(run_dir: str | os.PathLike) -> None:
    """A new run starts with no metrics.jsonl (a leftover from a crashed start is dropped)."""
    (Path(run_dir) / METRICS_FILE).unlink(missing_ok=True)


def save_train_state(run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """One complete checkpoint dict (model, optimiser, scaler, epoch, step), atomically."""
    atomic_write(Path(run_dir) / TRAIN_STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_train_state(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / TRAIN_STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    append_jsonl(Path(run_dir) / METRICS_FILE, record)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a torn last line (a crash mid-append) is dropped with a warning."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def truncate_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Drop records logged after `last_step` (written after the last saved state, before a crash)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))
