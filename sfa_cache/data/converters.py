"""Annotation files of public datasets -> our manifest CSV (`path,label,split`).

* Kinetics-400/600/700: the official CSVs (`label,youtube_id,time_start,time_end,split[,is_cc]`).
  Videos are found by file name anywhere under the video folder, in the naming of the common
  downloaders: `<youtube_id>_<start:06d>_<end:06d>.<ext>` (cvdfoundation / ActivityNet
  downloader, with or without `<split>/<label>/` folders) or plain `<youtube_id>.<ext>`.
* Something-Something v2: `labels.json` (template -> index) and `train.json` / `validation.json`
  (`id`, `template` ...); videos are `<id>.webm`. Labels are the templates without brackets, as
  in labels.json; the test set has no labels and is not converted.
* A folder per class: `ROOT/<class>/<video>.<ext>`.

Rows whose video is missing are left out and listed in the report; `strict` makes any missing
video an error. Paths are written relative to the manifest's folder, so the manifest and the
videos can move together.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sfa_cache.atomic import atomic_write_text
from sfa_cache.errors import SfaError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


@dataclass
class Conversion:
    """What a converter found: rows `(video path, label, split)` and what it could not find."""

    rows: list[tuple[Path, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one line per missing video: its id and what was looked for


def _video_index(root: Path) -> dict[str, Path]:
    """File stem -> path for every video file under `root` (the first one found wins)."""
    if not root.is_dir():
        raise SfaError(f"video folder not found: {root}")
    index: dict[str, Path] = {}
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                index.setdefault(stem, Path(dirpath) / name)
    return index


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise SfaError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SfaError(f"{path}: not valid JSON ({e})") from None


def kinetics(csv_path: str | os.PathLike, videos: str | os.PathLike, split: Optional[str] = None) -> Conversion:
    """Rows of an official Kinetics CSV whose video is under `videos`; `split` overrides the CSV's."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SfaError(f"file not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"label", "youtube_id", "time_start", "time_end"}
        if not needed <= set(reader.fieldnames or []):
            raise SfaError(f"{csv_path}: not a Kinetics CSV; need columns {sorted(needed)}, found {reader.fieldnames}")
        records = list(reader)
    index = _video_index(Path(videos))
    out = Conversion()
    for r in records:
        yid = r["youtube_id"].strip()
        try:
            clip = f"{yid}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
        except ValueError:
            raise SfaError(f"{csv_path}: bad time_start/time_end for {yid!r}") from None
        path = index.get(clip) or index.get(yid)
        if path is None:
            out.missing.append(f"{clip} (or {yid}).*")
            continue
        out.rows.append((path, r["label"].strip(), split or r.get("split", "").strip()))
    return out


def ssv2(labels_json: str | os.PathLike, annotations_json: str | os.PathLike, videos: str | os.PathLike,
         split: str) -> Conversion:
    """Rows of a Something-Something v2 annotation file (train.json or validation.json)."""
    labels = _read_json(Path(labels_json))
    entries = _read_json(Path(annotations_json))
    if not isinstance(labels, dict) or not isinstance(entries, list):
        raise SfaError("expected labels.json as {template: index} and the annotations as a list of {id, template}")
    index = _video_index(Path(videos))
    out = Conversion()
    for e in entries:
        if not isinstance(e, dict) or "id" not in e or "template" not in e:
            raise SfaError(
                f"{annotations_json}: entry without 'id' and 'template' (the test set has no labels): {e!r}"[:300]
            )
        label = e["template"].replace("[", "").replace("]", "")
        if label not in labels:
            raise SfaError(f"{annotations_json}: template {label!r} of video {e['id']} is not in {labels_json}")
        path = index.get(str(e["id"]))
        if path is None:
            out.missing.append(f"{e['id']}.webm")
            continue
        out.rows.append((path, label, split))
    return out


def folders(root: str | os.PathLike, split: str = "") -> Conversion:
    """One row per video in `root/<class>/`; classes are the sub-folder names."""
    root = Path(root)
    if not root.is_dir():
        raise SfaError(f"folder not found: {root}")
    out = Conversion()
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                out.rows.append((path, class_dir.name, split))
    if not out.rows:
        raise SfaError(f"{root}: no videos in class sub-folders ({', '.join(VIDEO_EXTENSIONS)})")
    return out


def write_manifest(conversion: Conversion, out: str | os.PathLike, *, strict: bool = False) -> dict[str, object]:
    """Write the manifest (and `<out>.missing.txt` when videos are missing); returns a summary."""
    out = Path(out)
    report = out.with_name(out.name + ".missing.txt")
    if conversion.missing and strict:
        raise SfaError(f"{len(conversion.missing)} videos are missing (first: {conversion.missing[0]}); "
                       "drop --strict to write the manifest without them")
    if not conversion.rows:
        raise SfaError("no video of the annotation file was found; check the video folder")
    with_split = any(split for _, _, split in conversion.rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "split"] if with_split else ["path", "label"])
    for path, label, split in conversion.rows:
        rel = os.path.relpath(path.resolve(), out.parent.resolve())
        writer.writerow([rel, label, split] if with_split else [rel, label])
    atomic_write_text(out, buf.getvalue())
    if conversion.missing:
        atomic_write_text(report, "\n".join(conversion.missing) + "\n")
    else:
        report.unlink(missing_ok=True)
    return {
        "manifest": str(out),
        "rows": len(conversion.rows),
        "classes": len({label for _, label, _ in conversion.rows}),
        "missing": len(conversion.missing),
        "missing_report": str(report) if conversion.missing else None,
    }

