"""`failures.jsonl`: one JSON line per clip that could not be decoded, with the reason."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional


def record_failure(log_path: Optional[str | os.PathLike], *, path: str, reason: str, row: int, **extra: object) -> None:
    """Append one line. Single short appends are atomic on POSIX, so data workers may share it."""
    if log_path is None:
        return
    line = json.dumps({"row": row, "path": path, "reason": reason, "time": time.time(), **extra})
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def read_failures(log_path: str | os.PathLike) -> list[dict]:
    path = Path(log_path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
