"""`sfa-cache assemble`: Stage-1 spatial weights + Stage-2 adapter and temporal -> one
end-to-end run directory that takes raw frames (evaluate, predict, extract all accept it)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialSource
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.run.claim import claim_assembled_dir
from sfa_cache.run.record import RunRecord, read_run_record, write_record
from sfa_cache.run.weights import MODEL_FILE, read_weights, save_model_weights, spatial_from_source
from sfa_cache.runtime import library_versions
from sfa_cache.settings_io import config_to_dict

log = logging.getLogger("sfa_cache")


def assemble(stage2: str | Path, out: str | Path, *, spatial_run: Optional[str | Path] = None) -> Path:
    """Write the assembled model of the Stage-2 run `stage2` to `out` (replacing an earlier one).

    The spatial weights come from `spatial_run` if given, else from where the Stage-2 run says
    (its Stage-1 run, or the cache's source); they must match the fingerprint Stage 2 trained on.
    """
    stage2, out = Path(stage2), Path(out)
    record = read_run_record(stage2)
    if record.kind != "stage2":
        raise SfaError(f"{stage2} is not a Stage-2 run (kind {record.kind!r})")
    if not (stage2 / MODEL_FILE).is_file():
        raise SfaError(f"{stage2} has no {MODEL_FILE} yet (train at least one epoch)")
    source = SpatialSource(run=str(spatial_run)) if spatial_run is not None else record.spatial_source
    spatial, spatial_cfg = spatial_from_source(source, record.fingerprint)
    model_cfg = dataclasses.replace(record.model, spatial=spatial_cfg)
    model = ViViTFE(model_cfg, with_spatial=True)
    state = {f"spatial.{k}": v for k, v in spatial.state_dict().items()}
    state.update(read_weights(stage2))
    model.load_state_dict(state)  # strict: every part accounted for
    claim_assembled_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_weights(model, out)
    write_record(out, RunRecord(kind="assembled", model=model.cfg, classes=record.classes,
                                fingerprint=record.fingerprint, versions=library_versions(),
                                sources={"stage2": str(stage2.resolve()), "spatial": config_to_dict(source)}))
    log.info("assembled model -> %s", out)
    return out
