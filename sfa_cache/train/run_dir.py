"""A run directory while it trains: claiming the folder, train_state.pt and metrics.jsonl.

The run's record (config.json) and weights (model.safetensors) belong to `sfa_cache.checkpoint`.
Every whole-file write is atomic; metrics.jsonl is appended one short line at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.atomic import atomic_write, atomic_write_text
from sfa_cache.checkpoint import CONFIG_FILE, run_record_from_json
from sfa_cache.errors import SfaError
from sfa_cache.folders import folder_marker
from sfa_cache.jsonl import append_jsonl, read_jsonl

TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


def _identity(train_cfg: dict[str, Any], runtime_keys: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """Flattened settings that define a run's result ('optim.lr': 0.1, ...)."""
    flat: dict[str, Any] = {}
    for k, v in train_cfg.items():
        if isinstance(v, dict):
            flat.update(_identity(v, runtime_keys, f"{prefix}{k}."))
        elif k not in runtime_keys:
            flat[prefix + k] = v
    return flat


def prepare_run_dir(out: str | os.PathLike, *, kind: str, train_config: dict[str, Any], resume: bool,
                    runtime_keys: frozenset[str]) -> bool:
    """Check an output folder before training; returns True when an existing run is to be continued.

    An existing run is continued only with `resume` and identical settings (except
    `runtime_keys`, which may change between invocations); the error names the keys that differ.
    A non-empty folder that is not a run is refused.
    """
    out = Path(out)
    found = folder_marker(out, CONFIG_FILE, what="a run directory", advice="choose another --out")
    if found is None:
        return False
    stored = run_record_from_json(found, where=str(out / CONFIG_FILE))
    if not resume:
        raise SfaError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    old, new = _identity(stored.train or {}, runtime_keys), _identity(train_config, runtime_keys)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if stored.kind != kind or changed:
        raise SfaError(
            f"{out} holds a different run (differs in: {', '.join(changed) or 'kind'}); choose another --out"
        )
    return True


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
