"""The demo's report: results.md (every row's accuracy, time to target and cost over the seeds,
the verdict, the probes, top-1 per class), results.json, results.png (top-1 against training
seconds) and cost.png. What the numbers mean: demo_results.py; the verdict: demo_verdict.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.compare import mean_std
from sfa_cache.data.synthetic import CLASSES, FLASH_CLASSES
from sfa_cache.pipelines.demo_config import DemoConfig
from sfa_cache.pipelines.demo_results import CHANCE, TARGET_MARGIN, RowResult, collect, mean_pm, ttt_text
from sfa_cache.pipelines.demo_rows import Row
from sfa_cache.pipelines.demo_verdict import verdict
from sfa_cache.plot import accuracy_vs_seconds, cost_bars
from sfa_cache.report import markdown_table


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
    rows = [[m, mean_pm([p[m]["cell"] for p in probes]), mean_pm([p[m]["lit"] for p in probes])] for m in models]
    rows.append(["(the majority class)", mean_pm([p["majority"]["cell"] for p in probes]),
                 mean_pm([p["majority"]["lit"] for p in probes])])
    return [f"What the frozen per-frame features encode: linear probes on {probes[0]['frames_fit']:,} video frames, "
            f"scored on {probes[0]['frames_scored']:,} others (%):", "",
            markdown_table(["features of", "which cell (4 x 4)", "lit"], rows)]


def report_text(cfg: DemoConfig, results: list[RowResult], per_seed: dict[int, dict[str, Any]],
                image: dict[str, Any]) -> str:
    n = len(per_seed)
    head = ["row", "what it freezes and initialises", "paper", "frames",
            "top-1 (test videos)" + (" mean ± std" if n > 1 else ""), "flash classes top-1", "time to target (s)",
            "cost (s)", "epochs", "peak memory (MiB)"]
    table = [[r.row.key, r.row.label, r.row.paper_row or "-", r.row.frames, mean_pm([x.top1 for x in r.runs]),
              mean_pm([x.flash_top1 for x in r.runs]), ttt_text(r), mean_pm([x.cost for x in r.runs], "{:.0f}"),
              _how_ended(r),
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
        f"Target: SFA's best validation top-1 - {TARGET_MARGIN:.0f} point, per seed ({mean_pm(targets)}%). "
        "Time to target: training seconds paid until validation top-1 first reached it (Stage 1 and the training "
        "cache's extraction included for the rows that use them; validation, evaluation and process start-up "
        "excluded).",
        f"Shared by every row, not counted: data {mean_pm(data_seconds, '{:.0f}')} s a seed, and the image "
        f"pre-training, {image['seconds']:.0f} s once for every seed ({cfg.checkpoint} task, "
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
