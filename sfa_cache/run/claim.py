"""Claiming a folder for a run: a new, empty or resumable one, never someone else's data.

A training run (Stage 1, Stage 2) continues an existing run only with `--resume` and the same
settings; an assembled model replaces an earlier assembled model only. Anything else in the
folder is refused (`folders.folder_marker`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sfa_cache.errors import SfaError
from sfa_cache.folders import folder_marker
from sfa_cache.run.record import CONFIG_FILE, run_record_from_json


def _identity(train_cfg: dict[str, Any], runtime_keys: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """Flattened settings that define a run's result ('optim.lr': 0.1, ...)."""
    flat: dict[str, Any] = {}
    for k, v in train_cfg.items():
        if isinstance(v, dict):
            flat.update(_identity(v, runtime_keys, f"{prefix}{k}."))
        elif k not in runtime_keys:
            flat[prefix + k] = v
    return flat


def claim_run_dir(out: str | os.PathLike, *, kind: str, train_config: dict[str, Any], resume: bool,
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


def claim_assembled_dir(out: str | os.PathLike) -> None:
    """`out` may be new, empty, or an earlier assembled model (replaced, its evaluations dropped)."""
    out = Path(out)
    found = folder_marker(out, CONFIG_FILE, what="an assembled model", advice="choose another --out")
    if found is not None:
        kind = run_record_from_json(found, where=str(out / CONFIG_FILE)).kind
        if kind != "assembled":
            raise SfaError(f"{out} holds a {kind} run; assemble into a new folder, not over it")
        shutil.rmtree(out / "eval", ignore_errors=True)  # they describe the previous weights
