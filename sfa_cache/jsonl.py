"""JSON Lines files that grow by appends (metrics.jsonl, failures.jsonl): one record per line.

A process killed in the middle of an append leaves a torn last line. Readers drop it with a
warning (the record it held was never complete); a bad line anywhere else is not a crash's trace
but a damaged file, and a one-line error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sfa_cache.errors import SfaError

log = logging.getLogger("sfa_cache")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one line. A single short append is atomic on POSIX, so worker processes may share a file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of `path` ([] when it does not exist), without a torn last line."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SfaError(f"{path} is not a JSON Lines text file") from None
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif i == len(numbered) - 1:
            log.warning("%s: dropping its torn last line %d (a write cut short by a crash)", path, n)
        else:
            raise SfaError(f"{path}: line {n} is not a JSON record; the file is damaged")
    return records
