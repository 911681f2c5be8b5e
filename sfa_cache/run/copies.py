"""A run's copies of itself: RUN/best (the best epoch by validation top-1) and RUN/ema (the
weights' moving average, `--ema`), each a whole run directory usable wherever a run is."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sfa_cache.atomic import atomic_write_json
from sfa_cache.data.manifest import CLASSES_FILE
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.run.record import CONFIG_FILE
from sfa_cache.run.weights import save_model_weights

BEST_DIR = "best"  # OUT/best: the best epoch by validation top-1, a run directory of its own
BEST_FILE = "best.json"
EMA_DIR = "ema"  # OUT/ema: the weights' moving average at the last epoch (--ema), a run directory too
EMA_FILE = "ema.json"


def save_best(model: ViViTFE, out: Path, record: dict[str, Any]) -> None:
    """OUT/best: the best epoch so far by validation top-1 (best.json says which epoch)."""
    save_run_copy(model, out, BEST_DIR, BEST_FILE, {k: record[k] for k in ("epoch", "step", "val_top1", "val_top5")
                                                    if k in record})


def save_run_copy(model: ViViTFE, out: Path, name: str, info_file: str, info: dict[str, Any]) -> None:
    """OUT/<name>: a run directory of its own for `model` (config.json, classes.json,
    model.safetensors and `info_file` holding `info`), usable wherever a run is
    (`evaluate --run OUT/best`, `extract --model OUT/ema`, `assemble OUT/best`).

    Built beside it and swapped in by renames, so OUT/<name> is always one whole epoch's.
    """
    staging, final, old = out / f".{name}.tmp", out / name, out / f".{name}.old"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    for file in (CONFIG_FILE, CLASSES_FILE):
        shutil.copy2(out / file, staging / file)
    save_model_weights(model, staging)
    atomic_write_json(staging / info_file, info)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
