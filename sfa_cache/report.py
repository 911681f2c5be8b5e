"""Small text reports: markdown tables, byte sizes."""

from __future__ import annotations

from typing import Any, Sequence


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
