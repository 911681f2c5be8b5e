"""Figures with matplotlib: validation accuracy against training seconds, and cost split by phase.

matplotlib's object API (`Figure`, no pyplot) draws off-screen without touching global state, so
these run in any process, headless. Files are written atomically.
"""

from __future__ import annotations

import os
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from sfa_cache.atomic import atomic_write
from sfa_cache.compare import Curve, time_to_target


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fmt = os.fspath(path).rsplit(".", 1)[-1]
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))


def accuracy_vs_seconds(path: str | os.PathLike, curves: dict[str, Sequence[Curve]], *,
                        targets: Sequence[float] = (), title: str = "") -> None:
    """One line per method and seed (the first seed's bold and labelled), validation top-1 (%)
    against the training seconds paid; `targets` (one per seed): the first as a dashed line, and
    where each seed's curve first reached its own target, a circle."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    colours = [f"C{i}" for i in range(10)]
    for i, (method, runs) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        for k, curve in enumerate(runs):
            ax.plot(curve.seconds, curve.top1, color=colour, lw=1.8 if k == 0 else 0.9, alpha=1.0 if k == 0 else 0.5,
                    marker="." if len(curve.seconds) < 40 else None, label=method if k == 0 else None)
            reached = time_to_target(curve, targets[k]) if k < len(targets) else None
            if reached is not None:
                ax.plot(
                    [reached], [curve.top1[curve.seconds.index(reached)]], "o", ms=7, mfc="none", mec=colour, mew=1.5
                )
    if targets:
        ax.axhline(targets[0], color="0.3", ls="--", lw=1, label=f"target {targets[0]:.1f}% (first seed)")
    ax.set_xlabel("training seconds paid (earlier phases included)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right", framealpha=0.9)
    _save(fig, path)


def cost_bars(path: str | os.PathLike, costs: dict[str, dict[str, float]], *, title: str = "") -> None:
    """Horizontal stacked bars: per method (top to bottom), seconds per phase it pays for."""
    phases = list(dict.fromkeys(p for parts in costs.values() for p in parts))
    fig = Figure(figsize=(7.5, 0.45 * len(costs) + 1.4))
    ax = fig.subplots()
    methods = list(costs)[::-1]  # barh draws bottom-up
    left = [0.0] * len(methods)
    for i, phase in enumerate(phases):
        widths = [costs[m].get(phase, 0.0) for m in methods]
        ax.barh(methods, widths, left=left, color=f"C{i % 10}", label=phase)
        left = [a + b for a, b in zip(left, widths)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.0f} s", va="center", fontsize=8)
    ax.set_xlabel("training seconds (shared phases excluded)")
    ax.set_xlim(0, max(left + [1.0]) * 1.15)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def run_curves(path: str | os.PathLike, runs: dict[str, dict[str, Sequence[float]]], *, x_label: str,
               title: str = "") -> None:
    """Runs overlaid, one colour each: validation top-1 (%) on the left, training loss on the
    right, both against `x` (epochs or seconds). `runs[name]` holds equal-length sequences `x`,
    `val_top1` (may be empty: a run without validation) and `train_loss`."""
    fig = Figure(figsize=(10, 4.2))
    top1_ax, loss_ax = fig.subplots(1, 2)
    for i, (name, run) in enumerate(runs.items()):
        colour = f"C{i % 10}"
        marker = "." if len(run["x"]) < 40 else None
        if run["val_top1"]:
            top1_ax.plot(run["x"], run["val_top1"], color=colour, marker=marker, lw=1.6, label=name)
        loss_ax.plot(run["x"], run["train_loss"], color=colour, marker=marker, lw=1.6, label=name)
    top1_ax.set_ylabel("validation top-1 (%)")
    top1_ax.set_ylim(0, 100)
    loss_ax.set_ylabel("training loss")
    loss_ax.set_ylim(bottom=0)
    for ax in (top1_ax, loss_ax):
        ax.set_xlabel(x_label)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def ablation_panels(path: str | os.PathLike, rows: Sequence[dict], *, title: str = "") -> None:
    """An ablation's entries (rows with name, top1, params_trained, train_seconds, frames) as
    three panels of validation top-1 (%): against the parameters trained (log scale), the
    training seconds and the frames per clip; every point labelled with its entry's name."""
    panels = [("params_trained", "parameters trained", True), ("train_seconds", "training seconds", False),
              ("frames", "frames per clip", False)]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    axes[0].set_ylabel("validation top-1 (%)")
    for ax, (key, label, log_x) in zip(axes, panels):
        for i, row in enumerate(rows):
            ax.plot([row[key]], [row["top1"]], "o", color=f"C{i % 10}", ms=6)
            ax.annotate(row["name"], (row[key], row["top1"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7.5)
        if log_x:
            ax.set_xscale("log")
        if key != "train_seconds":  # few distinct settings: a tick at each, in plain units (120k, not 1.2x10^5)
            ax.set_xticks(sorted({row[key] for row in rows}))
            ax.xaxis.set_major_formatter(EngFormatter(places=0 if key == "frames" else 1, sep=""))
            ax.minorticks_off()
        ax.margins(x=0.15, y=0.1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
