"""`sfa-cache plot`: training runs' curves overlaid in one figure, and an ablation's figure.

Reads each run's metrics.jsonl (its epoch records: a resumed run's are already cut to what it
kept); the drawing is `sfa_cache.plot`'s.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

from sfa_cache.errors import SfaError
from sfa_cache.plot import ablation_panels, run_curves
from sfa_cache.run.progress import METRICS_FILE, read_metrics

X_AXES = {"epoch": "epoch", "seconds": "the run's training seconds (inside epochs; validation excluded)"}
FORMATS = ("png", "pdf", "svg")


def run_series(run: Path, x: str) -> dict[str, list[float]]:
    """A run's epoch records -> x (epochs, or cumulative training seconds), val_top1, train_loss."""
    if not (run / METRICS_FILE).is_file():
        raise SfaError(f"{run} is not a training run (no {METRICS_FILE})")
    epochs = [r for r in read_metrics(run) if r.get("kind") == "epoch"]
    if not epochs:
        raise SfaError(f"{run} has no finished epoch to plot yet")
    xs = [float(r["epoch"]) for r in epochs] if x == "epoch" else list(
        itertools.accumulate(float(r["train_seconds"]) for r in epochs))
    has_val = all("val_top1" in r for r in epochs)
    return {"x": xs, "val_top1": [r["val_top1"] for r in epochs] if has_val else [],
            "train_loss": [r["train_loss"] for r in epochs]}


def _labels(runs: Sequence[Path], labels: Sequence[str]) -> list[str]:
    """The given labels, else each run's folder name (with its parent's when folder names repeat)."""
    if labels:
        if len(labels) != len(runs):
            raise SfaError(f"{len(labels)} --label for {len(runs)} runs: give one per run, in order")
        chosen = list(labels)
    else:
        names = [r.name for r in runs]
        chosen = names if len(set(names)) == len(names) else [f"{r.parent.name}/{r.name}" for r in runs]
    repeated = sorted({label for label in chosen if chosen.count(label) > 1})
    if repeated:  # one curve per label: two runs under one label would be drawn as one
        raise SfaError(f"two runs would share the label {repeated[0]!r}; give each run its own --label")
    return chosen


def _check_format(out: Path) -> None:
    if out.suffix.lstrip(".").lower() not in FORMATS:
        raise SfaError(f"{out}: the figure's format comes from its extension; use one of .{', .'.join(FORMATS)}")


def plot_runs(runs: Sequence[str | Path], out: str | Path, *, x: str = "epoch", labels: Sequence[str] = (),
              title: str = "") -> Path:
    """Overlay `runs`' validation top-1 and training loss against `x` ('epoch' or 'seconds') into `out`."""
    if x not in X_AXES:
        raise SfaError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    out = Path(out)
    _check_format(out)
    paths = [Path(r) for r in runs]
    series = {label: run_series(run, x) for label, run in zip(_labels(paths, labels), paths)}
    run_curves(out, series, x_label=X_AXES[x], title=title)
    return out


def plot_ablation(rows: Sequence[dict[str, Any]], out: str | Path, *, title: str = "") -> Path | None:
    """An ablation's finished entries as `ablation_panels`; None (nothing drawn) when none finished."""
    done = [r for r in rows if r.get("status") == "done" and r.get("top1") is not None]
    if not done:
        return None
    out = Path(out)
    _check_format(out)
    ablation_panels(out, done, title=title)
    return out
