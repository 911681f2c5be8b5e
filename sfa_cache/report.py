"""Small text reports: markdown tables, byte sizes written and read."""

from __future__ import annotations

import re
from typing import Any, Sequence

from sfa_cache.errors import SfaError


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def human_bytes(nbytes: float) -> str:
    """Bytes -> '11.8 GiB' or '850 MiB' ('n/a' for an infinite or unknown size)."""
    if nbytes != nbytes or nbytes == float("inf"):
        return "n/a"
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'12GiB', '12 GB', '800MiB', '1.5g' -> bytes (GB = 10^9, GiB = 2^30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise SfaError(f"cannot read size {text!r}; write e.g. 12GiB, 12GB or 800MiB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise SfaError(f"size must be positive, got {text!r}")
    return int(value)
