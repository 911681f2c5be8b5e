"""WebDataset shards as input: index local tar shards once, then read each video by offset.

A sample is the group of members sharing a key (WebDataset's rule: the member name up to the
first dot of its base name): `<key>.mp4` (or .webm / .mkv / .avi / .mov / .m4v) and a label in
`<key>.cls` (a class index, as text) or `<key>.json` (`{"label": name or index}`; .cls wins).

Why an index instead of a streaming pipeline: one pass over the tar headers (the data is
skipped by seeking; remembered beside each shard, see `cached_scan`) gives every sample's
offset, so a shard pattern becomes an ordinary
`Manifest`. Then the cache's clip order is the sorted sample keys (deterministic, so resume
and torchrun extraction work), and training gets the same `EpochSampler` as a CSV: rank-strided
and padded so every rank runs the same number of batches (DDP never hangs on uneven shards),
with DataLoader workers taking whole batches. The cost: shards must be local (or mounted)
uncompressed tars; `pipe:` / `http` URLs are refused.

Broken input never stops a run: a sample without a video or a readable label, a member cut
off by a truncated shard, or a file that is not a tar is left out and listed in
`Manifest.skipped`; a video member that will not decode fails when it is read, like a broken
file in a CSV, and is recorded and skipped there.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Optional

from sfa_cache.atomic import atomic_write_text
from sfa_cache.data.converters import VIDEO_EXTENSIONS as _SUFFIXES
from sfa_cache.data.manifest import CLASSES_FILE, Sample, read_classes_file
from sfa_cache.errors import SfaError, first_line
from sfa_cache.video.locations import TarMember

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = tuple(s.lstrip(".") for s in _SUFFIXES)  # mp4 webm mkv avi mov m4v
LABEL_EXTENSIONS = ("cls", "json")


def expand_shards(pattern: str) -> list[str]:
    """'shards/train-{000000..000099}.tar' (braces, '::' lists, globs) -> the existing shard files."""
    from webdataset.shardlists import expand_urls  # WebDataset's own expansion rules

    if "://" in pattern or pattern.startswith("pipe:"):
        raise SfaError(f"{pattern}: only local (or mounted) tar shards can be read; copy them to disk first")
    paths: list[str] = []
    try:
        urls = expand_urls(pattern)
    except ValueError as e:  # braceexpand.UnbalancedBracesError
        raise SfaError(f"cannot expand the shard pattern {pattern!r}: {e}") from None
    if re.search(r"\.(tar\.gz|tgz|tar\.bz2|tar\.xz|tar\.zst)\b", pattern):
        raise SfaError(f"{pattern}: compressed shards cannot be read by offset; repack them as plain .tar "
                       f"(sfa-cache pack-wds, or tar without -z)")
    for url in urls:
        paths.extend(sorted(glob.glob(url)) if glob.has_magic(url) else [url])
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or len(missing) == len(paths):
        raise SfaError(f"no tar shard matches {pattern}" + (f" (first expected: {missing[0]})" if missing else ""))
    if missing:
        raise SfaError(f"{len(missing)} of the {len(paths)} shards of {pattern} are missing (first: {missing[0]})")
    return paths


def split_key(name: str) -> tuple[str, str]:
    """'dir/vid.001.mp4' -> ('dir/vid', '001.mp4'): WebDataset's key / extension split."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def parse_label(ext: str, data: bytes) -> str:
    """The label text of a .cls or .json member. Raises ValueError when there is none."""
    if ext == "cls":
        text = data.decode("utf-8").strip()
        if not text.isdigit():
            raise ValueError(f".cls must hold a class index, got {text[:40]!r}")
        return text
    value = json.loads(data)
    label = value.get("label") if isinstance(value, dict) else None
    if isinstance(label, bool) or not isinstance(label, (int, str)) or str(label).strip() == "":
        raise ValueError('.json has no "label" (a class name or index)')
    return str(label).strip()


def scan_shard(path: str) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Index one tar shard -> (its samples, the problems found: {"path", "reason"}).

    Raises OSError when the file cannot be read at all: a state of the disk, not of the shard.
    """
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    label_bytes: dict[tuple[str, str], bytes] = {}
    problems: list[dict[str, Any]] = []
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, "r:") as tar:  # "r:": uncompressed only; members are read by offset
            for m in tar:
                if not m.isfile():
                    continue
                if m.offset_data + m.size > size:
                    problems.append({"path": f"{path}:{m.name}", "reason": "member cut off (truncated shard)"})
                    continue
                key, ext = split_key(m.name)
                members.setdefault(key, {})[ext] = m
                if ext in LABEL_EXTENSIONS:
                    reader = tar.extractfile(m)
                    label_bytes[key, ext] = reader.read() if reader else b""
            # tarfile ends its iteration silently at a corrupt header past the first one.
            if _unread_data(path, tar.offset, size):
                problems.append({"path": path, "reason": f"corrupt tar header at byte {tar.offset}: the rest of "
                                                         f"the shard (after {len(members)} samples) is unreadable"})
    except (tarfile.TarError, EOFError) as e:
        reason = (
            "not an uncompressed tar file"
            if not members
            else f"shard truncated or corrupt after {len(members)} samples"
        )
        problems.append({"path": path, "reason": f"{reason} ({first_line(e, 120)})"})
    samples = []
    for key, parts in members.items():
        video = next((ext for ext in VIDEO_EXTENSIONS if ext in parts), None)
        label, label_problem = _label(key, label_bytes)
        where = f"{path}:{key}"
        if video is None:
            problems.append({"path": where, "reason": f"no video member (.{' / .'.join(VIDEO_EXTENSIONS)})"})
        elif label is None:
            problems.append({"path": where, "reason": label_problem})
        else:
            m = parts[video]
            samples.append(Sample(key, TarMember(path, m.name, m.offset_data, m.size), label))
    return samples, problems


def _label(key: str, label_bytes: dict[tuple[str, str], bytes]) -> tuple[Optional[str], str]:
    """The sample's label (.cls first, then .json), or None and why there is none."""
    problem = "no label member (.cls or .json)"
    for ext in LABEL_EXTENSIONS:
        if (key, ext) in label_bytes:
            try:
                return parse_label(ext, label_bytes[key, ext]), ""
            except (ValueError, UnicodeDecodeError) as e:
                problem = f"unreadable label in .{ext}: {str(e)[:120]}"
    return None, problem


def _unread_data(path: str, offset: int, size: int) -> bool:
    """True when the bytes past where tarfile stopped are more than the end-of-archive zeros."""
    if size - offset > 64 * 1024:  # end blocks and record padding are at most ~10 KiB
        return True
    with open(path, "rb") as f:
        f.seek(offset)
        return any(f.read())


def _name(label: str, classes: list[str]) -> str:
    return classes[int(label)] if label.isdigit() and int(label) < len(classes) else label


INDEX_FORMAT = 2  # bumped whenever scan_shard's findings change


def index_path(shard: str) -> str:
    folder, name = os.path.split(shard)
    return os.path.join(folder, f".{name}.sfa-index.json")


def cached_scan(shard: str) -> tuple[list[Sample], list[dict[str, Any]]]:
    """`scan_shard`, remembered beside the shard in a hidden `.NAME.sfa-index.json` stamped with
    the shard's size and mtime: the header pass (~0.1 ms per member in Python's tarfile, a
    minute for Kinetics-400) runs once per shard, not at every run start. A folder that cannot
    be written to just means indexing again next time."""
    path = index_path(shard)
    try:
        st = os.stat(shard)
    except OSError as e:
        return [], [{"path": shard, "reason": f"cannot read the shard: {e.strerror or e}"}]
    stamp = [st.st_size, st.st_mtime_ns]
    try:
        saved = json.loads(Path(path).read_text())
        if saved["format"] == INDEX_FORMAT and saved["stamp"] == stamp:
            samples = [Sample(key, TarMember(shard, name, offset, size), label)
                       for key, name, offset, size, label in saved["samples"]]
            return samples, [{"path": shard + p["where"], "reason": p["reason"]} for p in saved["problems"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no index yet, or an unreadable one: scan
    try:
        samples, problems = scan_shard(shard)
    except OSError as e:  # not saved: the next run tries again
        return [], [{"path": shard, "reason": f"cannot read the shard: {e.strerror or e}"}]
    rows = [[s.key, s.location.name, s.location.offset, s.location.size, s.label] for s in samples]
    where = [{"where": p["path"][len(shard):], "reason": p["reason"]} for p in problems]  # paths start with the shard's
    try:
        atomic_write_text(
            path, json.dumps({"format": INDEX_FORMAT, "stamp": stamp, "samples": rows, "problems": where})
        )
    except OSError:
        log.debug("cannot write the shard index %s", path)
    return samples, problems


def index_shards(pattern: str) -> tuple[list[Sample], Optional[list[str]], list[dict[str, Any]]]:
    """All samples of the shards of `pattern`, the class list stored beside them (the
    `classes.json` that `pack-wds` writes) if any, and the problems found."""
    shards = expand_shards(pattern)
    samples: list[Sample] = []
    problems: list[dict[str, Any]] = []
    for shard in shards:
        found, issues = cached_scan(shard)
        samples.extend(found)
        problems.extend(issues)
    for p in problems:
        log.warning("skipping %s: %s", p["path"], p["reason"])
    classes_file = os.path.join(os.path.dirname(shards[0]), CLASSES_FILE)
    classes = read_classes_file(classes_file) if os.path.isfile(classes_file) else None
    if classes is not None:  # indices mean this list's names: match by name against any other list
        samples = [Sample(s.key, s.location, _name(s.label, classes)) for s in samples]
    log.info("indexed %d samples in %d shard(s) of %s", len(samples), len(shards), pattern)
    return samples, classes, problems
