"""HDF5 frame files as input: index the videos of a file once; frames are read per worker.

A video is a dataset in one of the layouts of `video/h5_reader.py` (raw uint8 [T, H, W, 3], or
variable-length uint8 [T] holding one JPEG/PNG per frame), placed either

    /<key>              the dataset itself, with a `label` attribute, or
    /<key>/frames       a dataset named `frames` in a group that has the `label` attribute.

Keys may be nested paths ('/abseiling/vid001'). `label` is a class name or index. The file's
`classes` attribute (a list of names), when present, is its class list. With a split (stage1's
--train-split / --val-split, extract's --split), a file with a top-level group of that name
reads only that group, so one file can hold `/train/...` and `/val/...`.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from sfa_cache.data.manifest import Sample
from sfa_cache.errors import SfaError, first_line
from sfa_cache.video.h5_reader import layout_problem
from sfa_cache.video.locations import H5Video

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.item())
    return str(value.item() if isinstance(value, np.generic) else value).strip()


def _classes(path: str, value: Any) -> list[str]:
    """The file's `classes` attribute: a list of unique names."""
    if isinstance(value, (str, bytes)) or np.ndim(value) != 1:
        raise SfaError(f"{path}: the 'classes' attribute must be a list of class names, got {value!r:.80}")
    classes = [_text(c) for c in value]
    if len(set(classes)) != len(classes):
        raise SfaError(f"{path}: the 'classes' attribute has duplicate names")
    return classes


def index_h5(path: str, split: Optional[str] = None) -> tuple[list[Sample], Optional[list[str]], list[dict[str, Any]]]:
    """The videos of the HDF5 file `path` -> (samples, the file's class list or None, problems).

    The file is opened and closed here, in the parent: workers open their own handles.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SfaError(f"cannot open HDF5 file {path}: {first_line(e)}") from None
    samples: list[Sample] = []
    problems: list[dict[str, Any]] = []
    with f:
        root = f[split] if split and isinstance(f.get(split), h5py.Group) else f
        if split and root is f:
            log.info("%s has no top-level group %r: reading the whole file", path, split)
        classes = _classes(path, f.attrs["classes"]) if "classes" in f.attrs else None

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            holder = obj.parent if obj.name.rsplit("/", 1)[-1] == "frames" and "label" in obj.parent.attrs else obj
            if "label" not in holder.attrs:
                return  # not a video: other data may live in the file too
            where = f"{path}:{obj.name}"
            problem = layout_problem(obj)
            if problem:
                problems.append({"path": where, "reason": problem})
                return
            key = holder.name.lstrip("/")
            samples.append(Sample(key, H5Video(path, obj.name), _text(holder.attrs["label"])))

        root.visititems(visit)
    for p in problems:
        log.warning("skipping %s: %s", p["path"], p["reason"])
    if not samples and not problems:
        raise SfaError(f"{path}: no video found (a video is a dataset, or a group with a 'frames' dataset, "
                       f"that has a 'label' attribute; see docs/data.md)")
    return samples, classes, problems
