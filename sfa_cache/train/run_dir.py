"""The run directory contract (docs/architecture.md): config.json, model.safetensors, train_state.pt,
metrics.jsonl, classes.json. Every file is written atomically."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Optional

import torch

from sfa_cache.atomic import atomic_write, atomic_write_json, atomic_write_text
from sfa_cache.errors import SfaError

CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
FAILURES_FILE = "failures.jsonl"


def library_versions() -> dict[str, str]:
    """Versions that change numerics or decoding, recorded with every run and cache."""
    import numpy
    import timm

    import sfa_cache

    versions = {
        "sfa_cache": sfa_cache.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
    }
    for name in ("decord", "av"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "missing"
    return versions


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise SfaError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SfaError(f"{path} is not valid JSON: {e}") from None


def write_run_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / CONFIG_FILE, config)


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
    if (out / CONFIG_FILE).is_file():
        stored = read_run_config(out)
        if not resume:
            raise SfaError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        old, new = _identity(stored.get("train", {}), runtime_keys), _identity(train_config, runtime_keys)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if stored.get("kind") != kind or changed:
            raise SfaError(f"{out} holds a different run (differs in: {', '.join(changed) or 'kind'}); choose another --out")
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SfaError(f"{out} exists and is not a run directory; choose another --out")
    return False


def save_train_state(run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """One complete checkpoint dict (model, optimiser, scaler, epoch, step), atomically."""
    atomic_write(Path(run_dir) / TRAIN_STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_train_state(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / TRAIN_STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Drop records logged after `last_step` (written after the last saved state, before a crash)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))
