"""`failures.jsonl`: one JSON line per clip that could not be decoded, with the reason."""

from __future__ import annotations

import os
import time
from typing import Optional

from sfa_cache.jsonl import append_jsonl, read_jsonl

FAILURES_FILE = "failures.jsonl"  # in a run, an evaluation and a cache folder alike

# Stop early when this many clips in a row have all failed: a wrong --root or a broken decoder,
# not a few bad videos, and hours of "failed" records (or epochs trained on nothing) help nobody.
ALL_FAILED_LIMIT = 16


def record_failure(log_path: Optional[str | os.PathLike], *, path: str, reason: str, row: int, **extra: object) -> None:
    """Append one line. Single short appends are atomic on POSIX, so data workers may share it."""
    if log_path is None:
        return
    append_jsonl(log_path, {"row": row, "path": path, "reason": reason, "time": time.time(), **extra})


def read_failures(log_path: str | os.PathLike) -> list[dict]:
    return read_jsonl(log_path)
