"""The demo's results, read back from its runs: per row and seed, the test top-1, the validation
curve against paid training seconds, the cost by phase and how the run ended (demo_report.py
writes them, demo_verdict.py reads the paper's findings from them).

Accuracy is each row's kept (best-on-validation) model on the raw *test* videos. Cost is training
seconds: the time inside training epochs (data loading included, validation excluded) plus, for a
row that reads a cache, the extraction of its training cache and, for SFA, Stage 1. Process
start-up, validation and evaluation are not counted; the data and the image checkpoint are shared
by every row and listed apart; so are a restarted row's other attempts (demo.py). The target
is SFA's best validation top-1 minus 1 point, per seed; a row's time to target is the first point
of its validation curve at or above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sfa_cache.compare import Curve, mean_if_all, mean_std, time_to_target
from sfa_cache.data.synthetic import CLASSES, FLASH_CLASSES
from sfa_cache.pipelines.demo_rows import Row, seed_dir
from sfa_cache.run.progress import read_metrics

TARGET_MARGIN = 1.0  # points below SFA's final top-1 (MLPerf-style: "reaches the reference quality")
CHANCE = 100 / len(CLASSES)
# The paper's findings in miniature (issue targets), each checked by the verdict.
SFA_VS_BASELINE_POINTS = 2.0  # SFA within this of the converged baseline, or above it
SFA_TIME_RATIO = 0.5  # SFA's time to target at most this fraction of the baseline's
ROW_I_GAP = 15.0  # row I at least this far below SFA
FLASH_GAIN_32_VS_8 = 10.0  # F frames at least this far above 8 on the flash classes


@dataclass
class SeedRun:
    """One row on one seed."""

    top1: float
    top5: float
    per_class: dict[str, float]
    curve: Curve
    cost_parts: dict[str, float]  # phase -> training seconds
    epochs: int
    stopped_early: bool
    peak_mem_mb: float
    restarted: bool = False  # an earlier attempt stalled; this is a later one
    stalled: bool = False  # the kept attempt stalled too: nothing is read from it
    unlearnt: tuple[str, ...] = ()  # the classes it never got right on the validation videos
    stalled_seconds: float = 0.0  # training seconds of the other (stalled) attempts, listed apart

    @property
    def flash_top1(self) -> float:
        return sum(self.per_class[c] for c in FLASH_CLASSES) / len(FLASH_CLASSES)

    @property
    def cost(self) -> float:
        return sum(self.cost_parts.values())


@dataclass
class RowResult:
    row: Row
    runs: list[SeedRun] = field(default_factory=list)
    targets: list[float] = field(default_factory=list)  # per seed

    @property
    def times_to_target(self) -> list[Optional[float]]:
        return [time_to_target(r.curve, t) for r, t in zip(self.runs, self.targets)]

    def mean(self, what: str) -> float:
        return mean_std([getattr(r, what) for r in self.runs])[0]

    def as_json(self) -> dict[str, Any]:
        top1, top1_std = mean_std([r.top1 for r in self.runs])
        flash, flash_std = mean_std([r.flash_top1 for r in self.runs])
        parts = list(dict.fromkeys(p for r in self.runs for p in r.cost_parts))
        return {
            "name": self.row.label,
            "key": self.row.key,
            "paper_row": self.row.paper_row,
            "frames": self.row.frames,
            "top1_mean": top1,
            "top1_std": top1_std,
            "top1_per_seed": [r.top1 for r in self.runs],
            "top5_mean": self.mean("top5"),
            "time_to_target_s": mean_if_all(self.times_to_target),
            "time_to_target_per_seed": self.times_to_target,
            "cost_s": self.mean("cost"),
            "cost_s_per_seed": [r.cost for r in self.runs],
            "cost_parts_s": {p: mean_std([r.cost_parts.get(p, 0.0) for r in self.runs])[0] for p in parts},
            "per_class_top1": {c: mean_std([r.per_class[c] for r in self.runs])[0] for c in CLASSES},
            "flash_top1_mean": flash,
            "flash_top1_std": flash_std,
            "epochs_per_seed": [r.epochs for r in self.runs],
            "stopped_early_per_seed": [r.stopped_early for r in self.runs],
            "restarted_per_seed": [r.restarted for r in self.runs],
            "stalled_per_seed": [r.stalled for r in self.runs],
            "stalled_attempt_seconds_per_seed": [r.stalled_seconds for r in self.runs],
            "peak_mem_mb": max(r.peak_mem_mb for r in self.runs),
        }


PART_NAMES = {"stage1": "Stage 1", "extract-stage1": "extraction", "extract-image": "extraction"}


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]


def _paid_seconds(work: Path, phases: dict[str, Any], phase: str) -> float:
    """Training seconds of an earlier phase: Stage 1's epochs (its kept attempt), or the training
    cache's extraction."""
    if phase == "stage1":
        return _train_seconds(work / phases["stage1"]["result"]["run"])
    return float(phases[phase]["result"]["train_seconds"])


def _train_seconds(run_dir: Path) -> float:
    return sum(r["train_seconds"] for r in _epochs(run_dir))


def seed_run(work: Path, phases: dict[str, Any], row: Row) -> SeedRun:
    """What one row did on one seed, from its phases.json and its run directory's metrics."""
    trained = phases[row.key]["result"]
    parts = {PART_NAMES[p]: _paid_seconds(work, phases, p) for p in row.paid}
    records = _epochs(work / trained["run"])
    own = "Stage 2" if row.cache else ("Stage 1" if row.key == "stage1" else "end-to-end training")
    parts[own] = sum(r["train_seconds"] for r in records)
    final = phases["evaluate"]["result"][row.key]
    kept = next(a for a in trained["attempts"] if a["run"] == trained["run"])
    return SeedRun(
        top1=final["top1"],
        top5=final["top5"],
        per_class=final["per_class_top1"],
        curve=Curve.from_epochs(records, paid_before=sum(v for k, v in parts.items() if k != own)),
        cost_parts=parts,
        epochs=len(records),
        stopped_early=bool(trained["stopped_early"]),
        peak_mem_mb=max(phases[p]["peak_mem_mb"] for p in (*row.paid, row.key)),
        restarted=len(trained["attempts"]) > 1,
        stalled=bool(trained["stalled"]),
        unlearnt=tuple(kept["unlearnt"]),
        stalled_seconds=sum(_train_seconds(work / a["run"]) for a in trained["attempts"] if a is not kept),
    )


def collect(work: Path, rows: list[Row], per_seed: dict[int, dict[str, Any]]) -> list[RowResult]:
    results = [RowResult(row) for row in rows]
    for seed, phases in per_seed.items():
        runs = {r.row.key: seed_run(seed_dir(work, seed), phases, r.row) for r in results}
        target = max(runs["sfa"].curve.top1) - TARGET_MARGIN  # on validation, as every curve
        for r in results:
            r.runs.append(runs[r.row.key])
            r.targets.append(target)
    return results


# --- text ---------------------------------------------------------------------------------------

def mean_pm(values: list[float], fmt: str = "{:.1f}") -> str:
    """'mean ± std' over the seeds (the mean alone for one seed)."""
    mean, std = mean_std(values)
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if len(values) > 1 else "")


def ttt_text(r: RowResult) -> str:
    """A row's time to target over the seeds, or on how many seeds it was not reached."""
    times = r.times_to_target
    reached = [t for t in times if t is not None]
    if len(reached) == len(times):
        return mean_pm(reached, "{:.0f}")
    return "not reached" if not reached else f"not reached on {len(times) - len(reached)} of {len(times)} seeds"
