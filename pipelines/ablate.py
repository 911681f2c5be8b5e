"""`sfa-cache ablate`: many Stage-2 trainings over one cache, and a table of their results.

A grid file (JSON, or YAML when PyYAML is installed) holds `base` settings (those of
`train-temporal`), a list of `runs` and/or a `product` of values; every entry is
base + run + one combination of the product:

    {"base": {"train_cache": "...", "val_cache": "...", "stage1": "runs/s1", "epochs": 10},
     "runs": [{"name": "I", "adapter": "none", "temporal_init": "scratch"}, {"name": "V"}],
     "product": {"frames": [8, 32]}}

Each entry trains in a fresh process (so its peak memory is its own), one at a time, or one per
device when several GPUs are given; an entry whose run directory holds `result.json` is done and
is skipped on a rerun. results.csv and results.md are rewritten after every entry; results.png
(top-1 against parameters trained, training seconds and frames) is drawn at the end.

The caches are read once for the whole grid: unless every entry streams (`cache_in_memory: stream`),
the parent loads each cache the entries use into shared host memory and every entry maps that
copy (and moves it to its GPU when it fits there) instead of reading the files again.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.cache.feeds.shared import CacheUse, Preloaded, share_host_copies
from sfa_cache.errors import SfaError
from sfa_cache.fresh_process import die_with_parent
from sfa_cache.pipelines.job_configs import resolve_train_temporal_config
from sfa_cache.pipelines.plot_runs import plot_ablation
from sfa_cache.pipelines.train_temporal import check_inputs, run_train_temporal
from sfa_cache.report import markdown_table
from sfa_cache.run.progress import read_metrics
from sfa_cache.run.record import holds_run
from sfa_cache.runtime import LOG_DATEFMT
from sfa_cache.settings_io import read_settings_file

log = logging.getLogger("sfa_cache")

RESULT_FILE = "result.json"
FAILURE_FILE = "failure.json"
COLUMNS = ["name", "status", "top1", "top5", "train_seconds", "peak_mem_mb", "params_trained",
           "frames", "adapter", "temporal_init", "lr", "epochs", "features"]


def _read_grid(path: Path) -> dict[str, Any]:
    data = read_settings_file(path)
    if set(data) - {"base", "runs", "product"}:
        raise SfaError(f"{path}: a grid is an object with keys base, runs and/or product")
    return data


def _entry_name(run: dict[str, Any], combo: dict[str, Any]) -> str:
    parts = [str(run["name"])] if "name" in run else [f"{k}={v}" for k, v in run.items()]
    parts += [f"{k}={v}" for k, v in combo.items()]
    name = ",".join(parts) or "base"
    return re.sub(r"[^A-Za-z0-9=,._+-]", "_", name)


def expand_grid(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, train-temporal settings without `out`) for every entry, checked before anything runs."""
    grid = _read_grid(Path(path))
    base = grid.get("base") or {}
    runs = grid.get("runs") or [{}]
    product = grid.get("product") or {}
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs) or not isinstance(product, dict):
        raise SfaError(f"{path}: 'runs' must be a list of objects and 'product' an object of lists")
    for key, values in product.items():
        if not isinstance(values, list) or not values:
            raise SfaError(f"{path}: product.{key} must be a non-empty list, got {values!r}")
    combos = [dict(zip(product, values)) for values in itertools.product(*product.values())] if product else [{}]
    entries = []
    for run, combo in itertools.product(runs, combos):
        name = _entry_name(run, combo)
        settings = {**base, **{k: v for k, v in run.items() if k != "name"}, **combo}
        for key in ("out", "stop_after", "device"):
            if key in settings:
                raise SfaError(f"{path}: entries must not set '{key}' (outputs go to OUT/<name>, devices come "
                               "from --devices, and every entry trains to the end)")
        settings.setdefault("assemble", False)
        try:  # fail on a typo or a wrong cache before hours of training
            check_inputs(resolve_train_temporal_config({**settings, "out": "unused"}))
        except SfaError as e:
            raise SfaError(f"{path}, entry {name}: {e}") from None
        entries.append((name, settings))
    names = [n for n, _ in entries]
    if len(set(names)) != len(names):
        raise SfaError(f"{path}: entry names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); "
                       "give each run a distinct 'name'")
    return entries


def preload_caches(entries: list[tuple[str, dict[str, Any]]]) -> Preloaded:
    """One shared host copy of every cache (and the views) the entries read, when they all fit
    in host memory; {} when every entry streams or they do not fit (`share_host_copies`).
    (`expand_grid` has checked every entry's caches already.)"""
    uses = []
    for _, settings in entries:
        cfg = resolve_train_temporal_config({**settings, "out": "unused"})
        uses += [CacheUse(path, cfg.frames, train=training, requested=cfg.cache_in_memory)
                 for path, training in ((cfg.train_cache, True), (cfg.val_cache, False)) if path is not None]
    return share_host_copies(uses)


def _train_entry(name: str, settings: dict[str, Any], out: str, device: str, preloaded: Preloaded,
                 parent: int) -> None:
    """Child process: train one entry, then write OUT/result.json (done) or OUT/failure.json."""
    die_with_parent(parent)  # a killed `sfa-cache ablate` takes its running entries with it
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{name}] %(message)s", datefmt=LOG_DATEFMT)
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        cfg = resolve_train_temporal_config({**settings, "out": out, "device": device})
        last = run_train_temporal(cfg, resume=holds_run(out), preloaded=preloaded)
        epochs = [r for r in read_metrics(out) if r.get("kind") == "epoch"]
        if not epochs or not last["complete"]:
            raise SfaError(f"training stopped at epoch {epochs[-1]['epoch'] if epochs else 0} of {cfg.optim.epochs}")
        row = {  # from metrics.jsonl, so an entry resumed across processes counts all of its epochs
            "name": name,
            "status": "done",
            "top1": epochs[-1].get("val_top1"),
            "top5": epochs[-1].get("val_top5"),
            "train_seconds": round(sum(r["epoch_seconds"] for r in epochs), 3),
            "peak_mem_mb": max(r.get("peak_mem_mb", 0.0) for r in epochs),
            "params_trained": last["params_trained"],
            "frames": cfg.frames,
            "adapter": cfg.adapter,
            "temporal_init": cfg.temporal_init,
            "lr": cfg.optim.lr,
            "epochs": epochs[-1]["epoch"],
            "device": device,
            "features": last["features"] + (" (shared)" if preloaded and last["features"] != "stream" else ""),
            "settings": settings,  # fewer than the cap after --patience
        }
        atomic_write_json(Path(out) / RESULT_FILE, row)
    except Exception as e:  # reported by the parent as this entry's failure; the grid goes on
        logging.getLogger("sfa_cache").error("failed", exc_info=not isinstance(e, SfaError))
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / FAILURE_FILE, {"status": f"failed: {type(e).__name__}: {e}"[:300]})
        raise SystemExit(1) from None


def _outcome(name: str, out: Path, exitcode: int | None) -> dict[str, Any]:
    if exitcode == 0 and (out / RESULT_FILE).is_file():
        return json.loads((out / RESULT_FILE).read_text())
    if (out / FAILURE_FILE).is_file():
        return {"name": name, **json.loads((out / FAILURE_FILE).read_text())}
    # Killed from outside (the OOM killer: -9) or crashed in native code (-11) without a word.
    return {"name": name, "status": f"failed: the process ended with exit code {exitcode}"}


def _write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    table = markdown_table(COLUMNS, [[cell(r.get(c)) for c in COLUMNS] for r in rows])
    atomic_write_text(out / "results.md", table + "\n")


def default_devices() -> list[str]:
    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]


def run_ablation(grid: str | Path, out: str | Path, *, devices: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """Run every unfinished entry of `grid` under `out`; returns the result rows in grid order.

    Each entry runs in its own process (spawned: a clean CUDA context and its own memory peak);
    at most one per device at a time. A process that dies, even by SIGKILL, fails only its entry.
    """
    out = Path(out)
    entries = expand_grid(grid)
    devices = list(devices or default_devices())
    rows: dict[str, dict[str, Any]] = {}
    pending = []
    for name, settings in entries:
        done = out / name / RESULT_FILE
        if done.is_file():
            row = json.loads(done.read_text())
            if row.get("settings") != settings:
                raise SfaError(f"{out / name} finished with other settings than the grid's entry {name!r} now has; "
                               "remove that folder to rerun it, or give the entry another name")
            rows[name] = row
            log.info("%s: done already, skipped", name)
        else:
            pending.append((name, settings))
    out.mkdir(parents=True, exist_ok=True)
    ordered = lambda: [rows[n] for n, _ in entries if n in rows]  # noqa: E731
    log.info("%d entries: %d to run on %s, %d done", len(entries), len(pending), ", ".join(devices), len(rows))
    preloaded = preload_caches(pending)  # tensors in shared memory travel to the children as handles
    ctx = multiprocessing.get_context("spawn")
    free, running = list(devices), {}
    while pending or running:
        while pending and free:
            name, settings = pending.pop(0)
            device = free.pop(0)
            (out / name / FAILURE_FILE).unlink(missing_ok=True)
            proc = ctx.Process(
                target=_train_entry, args=(name, settings, str(out / name), device, preloaded, os.getpid()),
                name=f"ablate-{name}",
            )
            proc.start()
            running[name] = (proc, device)
        for name, (proc, device) in list(running.items()):
            proc.join(timeout=0.2)
            if proc.exitcode is None:
                continue
            del running[name]
            free.append(device)
            rows[name] = _outcome(name, out / name, proc.exitcode)
            if rows[name]["status"] != "done":
                log.error("%s %s", name, rows[name]["status"])
            _write_tables(out, ordered())
    _write_tables(out, ordered())
    plot_ablation(ordered(), out / "results.png", title=f"ablation {out.name}")
    return ordered()
