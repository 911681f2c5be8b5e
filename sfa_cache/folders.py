"""Output folders a job claims, and the small JSON files that say whose they are.

A job writes only into a folder that is new, empty, or already marked as its own by a JSON file
(a run's config.json, a cache's extract.json, a pack's pack.json ...). Anything else there
could be someone's data: it is refused, never overwritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from sfa_cache.errors import SfaError


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from `path`; a malformed file is a one-line error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SfaError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SfaError(f"{path} does not hold a JSON object")
    return data


def folder_marker(folder: str | os.PathLike, marker: str, *, what: str, advice: str) -> Optional[dict[str, Any]]:
    """What `folder/marker` says when the folder has one: the caller decides whether that earlier
    job is this one. None when the folder is absent or empty (free to claim). A folder holding
    anything else is refused: "`folder` is not empty and is not `what`; `advice`"."""
    folder = Path(folder)
    if (folder / marker).is_file():
        return read_json_object(folder / marker)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise SfaError(f"{folder} is not empty and is not {what}; {advice}")
    return None
