"""The demo's report: every row's accuracy, time to target and cost over the seeds, the verdict,
results.md, results.json, results.png (top-1 against training seconds) and cost.png.

Accuracy is each row's kept (best-on-validation) model on the raw *test* videos. Cost is training
seconds: the time inside training epochs (data loading included, validation excluded) plus, for a
row that reads a cache, the extraction of its training cache and, for SFA, Stage 1. Process
start-up, validation and evaluation are not counted; the data and the image checkpoint are shared
by every row and listed apart; so are a restarted row's other attempts (demo.py). The target
is SFA's best validation top-1 minus 1 point, per seed; a row's time to target is the first point
of its validation curve at or above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.compare import Curve, mean_if_all, mean_std, time_to_target, top1_at
from sfa_cache.data.synthetic import CLASSES, FLASH_CLASSES
from sfa_cache.pipelines.demo_config import DemoConfig
from sfa_cache.pipelines.demo_rows import Row, seed_dir
from sfa_cache.plot import accuracy_vs_seconds, cost_bars
from sfa_cache.report import markdown_table
from sfa_cache.run.progress import read_metrics
from sfa_cache.train.fit import patience_exhausted

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

def _pm(values: list[float], fmt: str = "{:.1f}") -> str:
    mean, std = mean_std(values)
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if len(values) > 1 else "")


def _ttt(r: RowResult) -> str:
    times = r.times_to_target
    reached = [t for t in times if t is not None]
    if len(reached) == len(times):
        return _pm(reached, "{:.0f}")
    return "not reached" if not reached else f"not reached on {len(times) - len(reached)} of {len(times)} seeds"


def verdict(by_key: dict[str, RowResult], cfg: DemoConfig) -> list[str]:
    """One line per claim of the paper, with its numbers, and whether this run reproduces it."""
    sfa, base, row_i = by_key["sfa"], by_key["baseline"], by_key["I"]
    n = len(sfa.runs)
    seeds = f"mean of {n} seeds" if n > 1 else "one seed: a single-seed result, not a finding"
    if max(r.mean("top1") for r in by_key.values()) < CHANCE + 10:
        return [f"Verdict ({seeds}): no row rose clearly above chance ({CHANCE:.1f}%), so this run does not test the "
                "recipe (too short?)."]
    lines = []

    def claim(ok: bool, text: str, *needs: RowResult) -> None:
        """A finding, unless one of the rows it compares did not learn: then no verdict is read."""
        failed = [f"{r.row.key} on seed {seed} (never right on {', '.join(run.unlearnt)})"
                  for r in needs for seed, run in zip(cfg.seed_list, r.runs) if run.stalled]
        if failed:
            lines.append(f"- NOT TESTED (a row stalled on every attempt: {'; '.join(failed)}): {text}")
        else:
            lines.append(f"- {'reproduced' if ok else 'NOT reproduced'}: {text}")

    s, b = sfa.mean("top1"), base.mean("top1")
    # Converged by the rule: stopped by patience, or at the cap on a plateau patience would have
    # stopped (the cosine schedule is at its end there, so more epochs of it cannot follow).
    rising = sum(not (run.stopped_early or patience_exhausted(list(run.curve.top1), cfg.patience,
                                                                  list(run.curve.loss)))
                 for run in base.runs)
    if all(run.stopped_early for run in base.runs):
        converged = "the baseline stopped by patience on every seed"
    elif not rising:
        converged = (f"the baseline stopped by patience, or ended its {cfg.baseline_max_epochs}-epoch schedule on a "
                     f"plateau of {cfg.patience} epochs, on every seed")
    else:
        converged = (f"the baseline hit its {cfg.baseline_max_epochs}-epoch cap while still improving on {rising} of "
                     f"{n} seeds (not converged by the rule)")
    claim(s >= b - SFA_VS_BASELINE_POINTS, f"SFA matches or beats the converged baseline: top-1 {s:.1f} vs {b:.1f} "
          f"({s - b:+.1f}; the bar: within {SFA_VS_BASELINE_POINTS:.0f} points or above); {converged}.", sfa, base)
    st, bt = sfa.times_to_target, base.times_to_target
    if any(t is None for t in bt):
        missed = sum(t is None for t in bt)
        claim(
            True,
            f"SFA is cheaper to the target: the baseline never reached SFA's final top-1 - {TARGET_MARGIN:.0f} "
            f"on {missed} of {n} seeds; SFA got there in {_ttt(sfa)} s, "
            f"the baseline trained {base.mean('cost'):.0f} s.",
            sfa, base,
        )
    else:
        ratio = sum(a / c for a, c in zip(st, bt)) / n
        claim(ratio <= SFA_TIME_RATIO, f"SFA is cheaper to the target: {_ttt(sfa)} s vs the baseline's {_ttt(base)} s, "
              f"a ratio of {ratio:.2f} (the bar: at most {SFA_TIME_RATIO}).", sfa, base)
    # The same question at a target both reach: the lower of the two finals, minus the margin.
    common = [min(a.top1, c.top1) - TARGET_MARGIN for a, c in zip(sfa.runs, base.runs)]
    sc = [time_to_target(r.curve, t) for r, t in zip(sfa.runs, common)]
    bc = [time_to_target(r.curve, t) for r, t in zip(base.runs, common)]
    if common != [r.top1 - TARGET_MARGIN for r in sfa.runs] and all(t is not None for t in sc + bc):
        lines.append(f"- to a target both reach (the lower final top-1 - {TARGET_MARGIN:.0f}, per seed: "
                     f"{', '.join(f'{t:.1f}' for t in common)}): SFA {_pm(sc, '{:.0f}')} s, the baseline "
                     f"{_pm(bc, '{:.0f}')} s, a ratio of {sum(a / c for a, c in zip(sc, bc)) / n:.2f}.")
    # And at an equal budget: where the baseline stood when it had paid what SFA paid in all.
    at_budget = [top1_at(b_run.curve, s_run.cost) for s_run, b_run in zip(sfa.runs, base.runs)]
    lines.append(f"- at SFA's whole cost ({_pm([r.cost for r in sfa.runs], '{:.0f}')} s per seed), the baseline's "
                 "validation top-1 was " + ", ".join("no epoch done" if t is None else f"{t:.1f}" for t in at_budget)
                 + f" (SFA: {', '.join(f'{r.top1:.1f}' for r in sfa.runs)}).")
    i = row_i.mean("top1")
    claim(i <= s - ROW_I_GAP, f"row I (the image checkpoint frozen, temporal from scratch) falls well short of SFA: "
          f"{i:.1f} vs {s:.1f} ({i - s:+.1f}; the bar: at least {ROW_I_GAP:.0f} points below).", row_i, sfa)
    eight = by_key.get(f"sfa-{min(cfg.frames_sweep)}f") if cfg.frames_sweep else None
    if eight is not None:
        f_hi, f_lo = sfa.mean("flash_top1"), eight.mean("flash_top1")
        claim(
            f_hi >= f_lo + FLASH_GAIN_32_VS_8,
            f"more frames help where the classes need them: SFA at {cfg.frames} "
            f"frames {f_hi:.1f} vs {eight.row.frames} frames {f_lo:.1f} top-1 on the flash classes "
            f"({f_hi - f_lo:+.1f}; "
            f"the bar: at least {FLASH_GAIN_32_VS_8:.0f} points).",
            sfa, eight,
        )
    return [f"Verdict ({seeds}):", *lines]


def _how_ended(r: RowResult) -> str:
    """Each seed's epochs and what ended it: patience (p) or the cap (c); r: restarted, S: stalled."""
    marks = []
    for run in r.runs:
        mark = f"{run.epochs}{'p' if run.stopped_early else 'c'}"
        marks.append(mark + ("S" if run.stalled else "r" if run.restarted else ""))
    return "/".join(marks)


def probe_table(per_seed: dict[int, dict[str, Any]]) -> list[str]:
    """The premise: linear-probe accuracy of "which cell" and "lit" on frozen per-frame features."""
    probes = [p["probe"]["result"] for p in per_seed.values()]
    models = [k for k in probes[0] if isinstance(probes[0][k], dict) and k != "majority"]
    rows = [[m, _pm([p[m]["cell"] for p in probes]), _pm([p[m]["lit"] for p in probes])] for m in models]
    rows.append(["(the majority class)", _pm([p["majority"]["cell"] for p in probes]),
                 _pm([p["majority"]["lit"] for p in probes])])
    return [f"What the frozen per-frame features encode: linear probes on {probes[0]['frames_fit']:,} video frames, "
            f"scored on {probes[0]['frames_scored']:,} others (%):", "",
            markdown_table(["features of", "which cell (4 x 4)", "lit"], rows)]


def report_text(cfg: DemoConfig, results: list[RowResult], per_seed: dict[int, dict[str, Any]],
                image: dict[str, Any]) -> str:
    n = len(per_seed)
    head = ["row", "what it freezes and initialises", "paper", "frames",
            "top-1 (test videos)" + (" mean ± std" if n > 1 else ""), "flash classes top-1", "time to target (s)",
            "cost (s)", "epochs", "peak memory (MiB)"]
    table = [[r.row.key, r.row.label, r.row.paper_row or "-", r.row.frames, _pm([x.top1 for x in r.runs]),
              _pm([x.flash_top1 for x in r.runs]), _ttt(r), _pm([x.cost for x in r.runs], "{:.0f}"), _how_ended(r),
              f"{max(x.peak_mem_mb for x in r.runs):.0f}"] for r in results]
    targets = results[0].targets
    data_seconds = [p["data"]["seconds"] for p in per_seed.values()]
    restarts = [f"{r.row.key} (seed {seed}: {run.stalled_seconds:.0f} s)" for r in results
                for seed, run in zip(per_seed, r.runs) if run.restarted]
    stalled = [f"{r.row.key} (seed {seed})" for r in results for seed, run in zip(per_seed, r.runs) if run.stalled]
    per_class = markdown_table(["row", *CLASSES], [[r.row.key, *(f"{mean_std([x.per_class[c] for x in r.runs])[0]:.0f}"
                                                                  for c in CLASSES)] for r in results])
    lines = [
        f"# sfa-cache demo: the paper's Table 1 in miniature ({n} seed{'s' if n > 1 else ''}: "
        f"{', '.join(map(str, per_seed))}; {cfg.checkpoint} image checkpoint; F = {cfg.frames}; {cfg.backbone} at "
        f"{cfg.image_size} px; {'float32' if cfg.amp == 'none' else cfg.amp + ' autocast'})",
        "",
        markdown_table(head, table),
        "",
        f"Top-1 is each row's kept model (its best epoch on the {cfg.val_per_class * len(CLASSES)} validation videos) "
        f"on the {cfg.test_per_class * len(CLASSES)} test videos, which choose nothing. Every row trains until "
        f"neither validation top-1 nor validation loss has improved for {cfg.patience} epochs (p) or its cap "
        f"(c: {cfg.stage1_max_epochs} epochs for Stage 1, {cfg.baseline_max_epochs} for the baseline, "
        f"{cfg.stage2_max_epochs} for a Stage-2 row).",
        "A row whose kept model is never right on some class of the validation videos has stalled: it is trained "
        f"again from another seed (r; at most {cfg.restarts} time(s)), and reported as stalled (S), with no verdict "
        "read from it, if it stalls on every attempt. "
        + (f"Restarted: {', '.join(restarts)} of training in stalled attempts, not counted in the cost. "
           if restarts else "")
        + (f"Stalled: {', '.join(stalled)}." if stalled else "No row stalled in the end."),
        f"Target: SFA's best validation top-1 - {TARGET_MARGIN:.0f} point, per seed ({_pm(targets)}%). Time to target: "
        "training seconds paid until validation top-1 first reached it (Stage 1 and the training cache's extraction "
        "included for the rows that use them; validation, evaluation and process start-up excluded).",
        f"Shared by every row, not counted: data {_pm(data_seconds, '{:.0f}')} s a seed, and the image pre-training, "
        f"{image['seconds']:.0f} s once for every seed ({cfg.checkpoint} task, "
        f"{image['result']['accuracy'] * 100:.1f}% on its own held-out images). "
        f"Chance is {CHANCE:.1f}% (7 classes). Flash classes: {', '.join(FLASH_CLASSES)} (one flash of light: 8 "
        "frames often miss it).",
        "",
        *verdict({r.row.key: r for r in results}, cfg),
        "",
        *probe_table(per_seed),
        "",
        f"Top-1 per class on the test videos (%, mean over seeds; {cfg.test_per_class} clips per class and seed, "
        f"so one clip is {100 / cfg.test_per_class:.1f} points):", "", per_class, "",
        "Figures: results.png (validation top-1 against training seconds; circles: time to target), cost.png.",
    ]
    return "\n".join(lines) + "\n"


def write_report(work: Path, cfg: DemoConfig, rows: list[Row], per_seed: dict[int, dict[str, Any]],
                 image: dict[str, Any]) -> str:
    """Write results.md, results.json, results.png and cost.png in `work`; return results.md's text.
    `per_seed`: each seed's phases.json; `image`: the image checkpoint's phase (one for every seed)."""
    results = collect(work, rows, per_seed)
    text = report_text(cfg, results, per_seed, image)
    targets = results[0].targets
    atomic_write_json(work / "results.json", _finite({
        "seeds": list(per_seed), "amp": cfg.amp, "checkpoint": cfg.checkpoint, "split": "test",
        "selection_split": "val", "target_top1": mean_std(targets)[0], "target_top1_per_seed": targets,
        "target_rule": f"SFA's best validation top-1 minus {TARGET_MARGIN} point, per seed",
        "image_checkpoint_accuracy": image["result"]["accuracy"],
        "probe_per_seed": [p["probe"]["result"] for p in per_seed.values()],
        "rows": [r.as_json() for r in results],
    }))
    atomic_write_text(work / "results.md", text)
    accuracy_vs_seconds(work / "results.png", {r.row.key: [x.curve for x in r.runs] for r in results}, targets=targets,
                        title=f"validation top-1 against training seconds ({len(per_seed)} seed(s); "
                              "circles: each seed's time to its target)")
    cost_bars(work / "cost.png", {r.row.key: r.as_json()["cost_parts_s"] for r in results},
              title="training cost by phase (mean over seeds)")
    return text


def _finite(value: Any) -> Any:
    """NaN -> None, so results.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
