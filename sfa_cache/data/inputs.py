"""Every input a pipeline accepts, read into one `Manifest`.

    train.csv                              a CSV manifest (path,label[,split])
    'shards/train-{000000..000099}.tar'    WebDataset shards (`wds_input.py`)
    frames.h5                              an HDF5 frame file (`h5_input.py`)

WebDataset and HDF5 inputs are indexed once, in the parent, before any worker starts; their
clips are ordered by sample key, so the same samples give the same clip order (and clip ids)
however they are split into shards, and the cache's shards, resume and torchrun ranks work on
them exactly as on a CSV. Everything downstream sees the same `Manifest` whatever the source.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

from sfa_cache.data.h5_input import index_h5
from sfa_cache.data.manifest import (
    Manifest,
    ManifestEntry,
    Sample,
    classes_from_labels,
    infer_classes,
    label_index,
    read_manifest,
)
from sfa_cache.data.wds_input import index_shards
from sfa_cache.errors import SfaError

H5_SUFFIXES = (".h5", ".hdf5")
INPUT_HELP = "a CSV manifest, WebDataset shards ('shards/train-{000000..000099}.tar') or an HDF5 frame file"


def input_kind(source: str) -> str:
    """'wds' for tar shard patterns (compressed ones too, to refuse them clearly), 'h5' for HDF5
    files, 'csv' for anything else."""
    if re.search(r"\.(tar(\.(gz|bz2|xz|zst))?|tgz)(\}|$)", source.lower()):
        return "wds"
    if Path(source).suffix.lower() in H5_SUFFIXES:
        return "h5"
    return "csv"


def input_name(source: str) -> str:
    """A short name for folder names: the file's stem ('k400.train.csv' -> 'k400.train', as
    caches have always been named), and for shards the pattern's stem without the brace
    part ('shards/train-{000000..000099}.tar' -> 'train')."""
    if input_kind(source) != "wds":
        return Path(source).stem
    stem = Path(re.sub(r"\{[^}]*\}", "", source)).name.split(".")[0]
    return stem.strip("-_") or "shards"


def read_input(source: str, classes: Optional[Sequence[str]] = None, root: Optional[str | os.PathLike] = None,
               split: Optional[str] = None) -> Manifest:
    """Read any input. `classes` None: the input's own list (see each reader), else inferred.

    `root` anchors a CSV's relative paths; `split` keeps a CSV's rows with that split value, or
    reads an HDF5 file's top-level group of that name when it has one. WebDataset inputs take
    neither (a split is its own set of shards).
    """
    kind = input_kind(source)
    if kind == "csv":
        return read_manifest(source, list(classes) if classes is not None else infer_classes(source), root, split)
    if kind == "wds":
        samples, own_classes, skipped = index_shards(source)
    else:
        samples, own_classes, skipped = index_h5(source, split)
    chosen = list(classes) if classes is not None else (own_classes or classes_from_labels([s.label for s in samples]))
    return manifest_from_samples(source, samples, chosen, skipped)


def manifest_from_samples(source: str, samples: Sequence[Sample], classes: list[str], skipped: list[dict]) -> Manifest:
    """Samples in key order -> a Manifest whose rows are positions in that order.

    A label outside the class list is an error (as in a CSV): the class list is wrong, not the sample.
    """
    if not samples:
        first = f"; first problem: {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""
        raise SfaError(f"{source}: no usable samples ({len(skipped)} skipped){first}")
    ordered = sorted(samples, key=lambda s: s.key)
    for a, b in zip(ordered, ordered[1:]):
        if a.key == b.key:
            raise SfaError(
                f"{source}: sample key {a.key!r} appears twice ({a.location} and {b.location}); keys must be unique"
            )
    index = {name: i for i, name in enumerate(classes)}
    entries = []
    for row, s in enumerate(ordered):
        label = label_index(s.label, classes, index)
        if label is None:
            raise SfaError(f"{s.location}: label {s.label!r} is not in the class list ({len(classes)} classes: "
                           f"{', '.join(classes[:5])}{' ...' if len(classes) > 5 else ''})")
        entries.append(ManifestEntry(s.location, label, row, s.key))
    return Manifest(Path(source), entries, classes, skipped)


def describe_input(manifest: Manifest) -> dict:
    """What a run or cache records about its input: the source, and the sample keys if any."""
    out: dict = {"path": os.path.abspath(manifest.source), "kind": input_kind(str(manifest.source))}
    if manifest.entries and manifest.entries[0].key is not None:
        out["keys"] = [e.key for e in manifest.entries]
    if manifest.skipped:
        out["skipped"] = manifest.skipped
    return out
