"""Experiment tracking: every metric record a run writes to metrics.jsonl also goes to the trackers
asked for (`--log`): TensorBoard event files (OUT/tb), a CSV of the epochs (OUT/metrics.csv) and
Weights & Biases (offline unless WANDB_MODE says otherwise).

metrics.jsonl stays the run's record (resume truncates it to the last saved epoch); the trackers
follow it: the CSV is rewritten from it after every epoch, TensorBoard purges the steps after the
resumed one, W&B resumes its run by id. Only rank 0 tracks.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from sfa_cache.atomic import atomic_write_text
from sfa_cache.errors import SfaError
from sfa_cache.run.progress import read_metrics

log = logging.getLogger("sfa_cache")

TRACKERS = ("tensorboard", "csv", "wandb")
CSV_FILE = "metrics.csv"
TB_DIR = "tb"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def resolve_trackers(spec: str) -> tuple[str, ...]:
    """`--log` -> tracker names. 'auto': TensorBoard (when installed) and CSV; 'none': only
    metrics.jsonl; else a comma list, each of which must be installed."""
    spec = spec.strip().lower()
    if spec == "none":
        return ()
    if spec == "auto":
        return ("tensorboard", "csv") if _installed("tensorboard") else ("csv",)
    names = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or not names:
        raise SfaError(f"--log takes auto, none or a comma list of {', '.join(TRACKERS)}; got {spec!r}")
    for name, module in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if name in names and not _installed(module):
            raise SfaError(f"--log {name} needs the {module} package (pip install {module})")
    return names


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics record, as TensorBoard tags (train/... per step, epoch/... or
    val/... per epoch, the weights' moving average under val_ema/...)."""
    kind = record.get("kind")
    out = {}
    for key, value in record.items():
        if key in ("kind", "epoch", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if kind == "train":
            tag = f"train_step/{key}"
        elif key.startswith("val_"):
            tag = f"val/{key[4:]}"
        elif key.startswith("ema_val_"):
            tag = f"val_ema/{key[8:]}"
        else:
            tag = f"epoch/{key}"
        out[tag] = float(value)
    return out


def _flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config -> flat scalar hyperparameters (what TensorBoard's HParams tab takes)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_hparams(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value)
    return flat


class Tracking:
    """Sends each metrics record to the chosen trackers; `close()` at the end of the run."""

    def __init__(self, out: str | os.PathLike, names: tuple[str, ...], *, config: dict[str, Any],
                 resume_step: Optional[int] = None) -> None:
        self.out = Path(out)
        self.names = names
        self.config = config
        self.epochs: list[dict[str, Any]] = []
        self.tb = self.wandb = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            tb_dir = self.out / TB_DIR
            if tb_dir.exists() and not tb_dir.is_dir():
                raise SfaError(f"{tb_dir} is a file where TensorBoard's event folder goes; move it away or pass "
                               "--log csv")

            # A resumed run drops the events logged after its saved state (the epoch record of the
            # saved step itself is kept): TensorBoard purges steps >= purge_step.
            self.tb = SummaryWriter(str(self.out / TB_DIR), purge_step=None if resume_step is None else resume_step + 1)
            self.tb.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)
        if "wandb" in names:
            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "sfa-cache"), dir=str(self.out),
                                    name=self.out.name, id=_wandb_id(self.out), resume="allow", config=config,
                                    mode=os.environ.get("WANDB_MODE", "offline"))

    def record(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record: a step ('train') or an epoch ('epoch')."""
        step = int(record.get("step", 0))
        scalars = _scalars(record)
        if self.tb is not None:
            for tag, value in scalars.items():
                self.tb.add_scalar(tag, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if record.get("kind") == "epoch" and "csv" in self.names:
            self._write_csv()

    def _write_csv(self) -> None:
        """metrics.csv from metrics.jsonl's epoch records (so it follows a resume's truncation)."""
        rows = [r for r in read_metrics(self.out) if r.get("kind") == "epoch"]
        if not rows:
            return
        fields = list(dict.fromkeys(k for r in rows for k in r if k != "kind"))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.out / CSV_FILE, buf.getvalue())

    def close(self, final: Optional[dict[str, Any]] = None) -> None:
        """Flush and close; `final` (the last epoch's record) goes with the hyperparameters."""
        if self.tb is not None:
            if final:
                metrics = {f"hparam/{k}": float(v) for k, v in final.items()
                           if k.startswith(("val_top", "ema_val_top")) and isinstance(v, (int, float))}
                self.tb.add_hparams(_flat_hparams(self.config), metrics or {"hparam/epochs": final.get("epoch", 0)},
                                    run_name="hparams")
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_id(out: Path) -> str:
    """A stable W&B run id per run directory (so a resumed run continues the same W&B run)."""
    import hashlib

    return hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16]
