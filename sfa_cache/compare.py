"""Comparing training methods by what they cost, not by epochs: time to target, as MLPerf does.

A method's validation curve is its top-1 after each epoch against the training seconds it had
paid by then (its earlier phases included: Stage 1 and the cache's extraction for SFA). Its time
to target is the first point of that curve at or above the target accuracy; a method that never
gets there has none. Several seeds give a mean and a sample standard deviation.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Curve:
    """Validation top-1 (%) and loss after each epoch, and the training seconds paid when it ended."""

    seconds: tuple[float, ...]
    top1: tuple[float, ...]
    loss: tuple[float, ...] = ()

    @classmethod
    def from_epochs(cls, epoch_records: Sequence[dict], *, paid_before: float = 0.0) -> Curve:
        """From a run's metrics.jsonl epoch records (`train_seconds`, `val_top1`, `val_loss`): time inside
        training epochs only (validation excluded), after `paid_before` seconds of earlier phases."""
        seconds, top1, loss, total = [], [], [], paid_before
        for r in epoch_records:
            total += r["train_seconds"]
            seconds.append(total)
            top1.append(r["val_top1"])
            loss.append(r["val_loss"])
        return cls(tuple(seconds), tuple(top1), tuple(loss))

    @property
    def cost(self) -> float:
        """Seconds paid by the end of training."""
        return self.seconds[-1] if self.seconds else 0.0


def time_to_target(curve: Curve, target: float) -> Optional[float]:
    """Seconds until validation top-1 first reached `target`, or None if it never did."""
    return next((s for s, t in zip(curve.seconds, curve.top1) if t >= target), None)


def top1_at(curve: Curve, seconds: float) -> Optional[float]:
    """Validation top-1 of the last epoch that ended within `seconds` of paid training (what a run
    stopped at that budget would have), or None when no epoch ended by then."""
    done = [t for s, t in zip(curve.seconds, curve.top1) if s <= seconds]
    return done[-1] if done else None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_if_all(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of per-seed values such as times to target, or None when any seed has none: a mean over
    only the seeds that got there would flatter a method that usually does not."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)
