"""`sfa-cache assemble`: Stage-1 spatial weights + Stage-2 adapter and temporal -> one
end-to-end run directory that takes raw frames (evaluate, predict, extract all accept it)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file

from sfa_cache.configs import config_to_dict
from sfa_cache.data.manifest import save_classes
from sfa_cache.errors import SfaError
from sfa_cache.models.sources import spatial_from_source
from sfa_cache.models.vivit import MODEL_FILE, ViViTFE, read_model_config, save_model_weights
from sfa_cache.train import run_dir as rd

log = logging.getLogger("sfa_cache")


def _claim(out: Path) -> None:
    """`out` may be new, empty, or an earlier assembled model (replaced, its evaluations dropped)."""
    if (out / rd.CONFIG_FILE).is_file():
        kind = rd.read_run_config(out).get("kind")
        if kind != "assembled":
            raise SfaError(f"{out} holds a {kind} run; assemble into a new folder, not over it")
        shutil.rmtree(out / "eval", ignore_errors=True)  # they describe the previous weights
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SfaError(f"{out} exists and is not an assembled model; choose another --out")


def assemble(stage2: str | Path, out: str | Path, *, spatial_run: Optional[str | Path] = None) -> Path:
    """Write the assembled model of the Stage-2 run `stage2` to `out` (replacing an earlier one).

    The spatial weights come from `spatial_run` if given, else from where the Stage-2 run says
    (its Stage-1 run, or the cache's source); they must match the fingerprint Stage 2 trained on.
    """
    stage2, out = Path(stage2), Path(out)
    config = rd.read_run_config(stage2)
    if config.get("kind") != "stage2":
        raise SfaError(f"{stage2} is not a Stage-2 run (kind {config.get('kind')!r})")
    if not (stage2 / MODEL_FILE).is_file():
        raise SfaError(f"{stage2} has no {MODEL_FILE} yet (train at least one epoch)")
    source = {"run": str(spatial_run)} if spatial_run is not None else config["spatial_source"]
    spatial, spatial_cfg = spatial_from_source(source, config["fingerprint"])
    model_cfg = read_model_config(stage2)
    model_cfg = dataclasses.replace(model_cfg, spatial=spatial_cfg)
    model = ViViTFE(model_cfg, with_spatial=True)
    state = {f"spatial.{k}": v for k, v in spatial.state_dict().items()}
    state.update(load_file(str(stage2 / MODEL_FILE)))
    model.load_state_dict(state)  # strict: every part accounted for
    _claim(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_weights(model, out)
    save_classes(out, config["classes"])
    rd.write_run_config(out, {
        "format": 1, "kind": "assembled", "model": config_to_dict(model.cfg), "classes": config["classes"],
        "fingerprint": config["fingerprint"],
        "sources": {"stage2": str(stage2.resolve()), "spatial": source},
        "versions": rd.library_versions(),
    })
    log.info("assembled model -> %s", out)
    return out
