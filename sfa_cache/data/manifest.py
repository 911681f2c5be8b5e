"""CSV manifests: `path,label[,split]`, paths relative to a root, labels as names or indices.

`Manifest` is also what WebDataset shards and HDF5 frame files become (`inputs.py`): entries
whose `path` is a tar member or an HDF5 dataset instead of a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from sfa_cache.errors import SfaError
from sfa_cache.video.locations import VideoLocation, location_identity

CLASSES_FILE = "classes.json"


@dataclass(frozen=True)
class ManifestEntry:
    path: VideoLocation  # a file resolved against the root, a tar member or an HDF5 dataset
    label: int  # index into the class list
    row: int  # 0-based data row in the source CSV, or position in key order (the clip's id downstream)
    key: Optional[str] = None  # the sample key of a WebDataset / HDF5 input


@dataclass(frozen=True)
class Sample:
    """One video of a WebDataset / HDF5 input, before its label is resolved against a class list."""

    key: str
    location: VideoLocation
    label: str  # a class name or an index, as text


@dataclass
class Manifest:
    source: Path
    entries: list[ManifestEntry]
    classes: list[str]
    # Samples of a WebDataset / HDF5 input left out while indexing (no label, no video member,
    # truncated shard ...): {"path", "reason"} each, recorded by the pipelines.
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.is_file():
        raise SfaError(f"manifest not found: {csv_path}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "path" not in fields or "label" not in fields:
                raise SfaError(f"{csv_path}: header must have 'path' and 'label' columns, found {fields}")
            return list(reader)
    except UnicodeDecodeError:
        raise SfaError(f"{csv_path} is not a text CSV manifest (WebDataset shard patterns end in .tar, "
                       f"HDF5 files in .h5 or .hdf5)") from None


def infer_classes(csv_path: str | os.PathLike) -> list[str]:
    """Class list implied by a manifest: indices -> '0'..'N-1', names -> sorted unique names."""
    return classes_from_labels([r["label"].strip() for r in _read_rows(Path(csv_path))])


def classes_from_labels(labels: Sequence[str]) -> list[str]:
    """Indices -> '0'..'N-1' (N = the largest + 1), names -> the sorted unique names."""
    if labels and all(lab.isdigit() for lab in labels):
        return [str(i) for i in range(max(int(lab) for lab in labels) + 1)]
    return sorted(set(labels))


def label_index(label: str, classes: Sequence[str], index: dict[str, int]) -> Optional[int]:
    """A label written as a class name or an index -> its index, or None when it is neither."""
    if label in index:
        return index[label]
    if label.isdigit() and int(label) < len(classes):
        return int(label)
    return None


def read_manifest(
    csv_path: str | os.PathLike,
    classes: Sequence[str],
    root: Optional[str | os.PathLike] = None,
    split: Optional[str] = None,
) -> Manifest:
    """Read `csv_path` with labels resolved against `classes`.

    `root` (default: the CSV's folder) anchors relative paths. `split` keeps only rows whose
    `split` column equals it; it is ignored for a manifest without that column.
    """
    csv_path = Path(csv_path)
    rows = _read_rows(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    index = {name: i for i, name in enumerate(classes)}
    entries = []
    for row_id, row in enumerate(rows):
        if split is not None and "split" in row and row["split"].strip() != split:
            continue
        label = row["label"].strip()
        label_id = label_index(label, classes, index)
        if label_id is None:
            raise SfaError(
                f"{csv_path} line {row_id + 2}: label {label!r} is not in the class list "
                f"({len(classes)} classes: {', '.join(list(classes)[:5])}{' ...' if len(classes) > 5 else ''})"
            )
        path = Path(row["path"].strip())
        entries.append(ManifestEntry(path if path.is_absolute() else base / path, label_id, row_id))
    if not entries:
        raise SfaError(f"{csv_path}: no rows" + (f" with split={split!r}" if split else ""))
    return Manifest(csv_path, entries, list(classes))


def manifest_digest(manifest: Manifest) -> str:
    """sha256 over the class names and every clip's (row, label, location identity).

    The identity of a manifest's *content*: the same CSV pointing at another copy of the data
    (another folder, or videos re-encoded in place) gets another digest. A file's identity is
    its absolute path and size (-1 when missing); see `video/locations.py` for the others.
    """
    h = hashlib.sha256(json.dumps(manifest.classes).encode())
    for e in manifest.entries:
        h.update(f"\n{e.row}|{e.label}|{location_identity(e.path)}".encode())
    return "sha256:" + h.hexdigest()


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """A class list from a .json list or a text file with one name per line."""
    path = Path(path)
    if not path.is_file():
        raise SfaError(f"class list not found: {path}")
    if path.suffix == ".json":
        classes = json.loads(path.read_text())
    else:
        classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not classes or len(set(classes)) != len(classes):
        raise SfaError(f"{path}: the class list is empty or has duplicate names")
    return [str(c) for c in classes]
