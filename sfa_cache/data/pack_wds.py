"""`sfa-cache pack-wds`: write a manifest's videos into WebDataset tar shards.

Each sample is `<key>.<ext>` (the video file's bytes, unchanged), `<key>.cls` (the class index)
and `<key>.json` (`{"label": name, "path": original path, "row": manifest row}`). The key is
`<row:08d>-<file stem>`, so sorting keys (what the reader does) gives back the manifest order
and a cache of the shards has the same clip ids as a cache of the CSV.

The split into shards is planned up front from the file sizes (a new shard starts when the
next video would pass `shard_size`), recorded in `OUT/pack.json`, and each shard is written to
a temp file and renamed: a rerun of an interrupted pack keeps the finished shards and writes
the rest; a shard name never holds a partial tar. `OUT/classes.json` is written last.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sfa_cache.atomic import atomic_path, atomic_write_json
from sfa_cache.data.converters import VIDEO_EXTENSIONS
from sfa_cache.data.manifest import CLASSES_FILE, Manifest, ManifestEntry, manifest_digest
from sfa_cache.errors import SfaError
from sfa_cache.folders import folder_marker

log = logging.getLogger(__name__)

PLAN_FILE = "pack.json"


@dataclass
class PackResult:
    out: Path
    pattern: str  # the --wds / --manifest value that reads the shards back
    shards: int
    samples: int
    shards_written: int
    missing: list[str]


def sample_key(entry: ManifestEntry) -> str:
    """`<row:08d>-<stem>`: unique, sorts in manifest order, and has no dot (WebDataset ends a key at the first dot)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(entry.path).stem)[:80]  # tar (ustar) names stop at 100 bytes
    return f"{entry.row:08d}-{stem}"


TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # tarfile pads an archive to whole 10 KiB records
TAR_HEADER = 3 * TAR_BLOCK  # per member, as webdataset's TarWriter writes it: a pax header (2 blocks) + the ustar one


def tar_sample_bytes(video_bytes: int) -> int:
    """Bytes one sample takes in a tar: a header and whole blocks for the video, and a header
    plus one block each for the small .cls and .json members."""
    return TAR_HEADER + -(-video_bytes // TAR_BLOCK) * TAR_BLOCK + 2 * (TAR_HEADER + TAR_BLOCK)


def tar_file_bytes(members_bytes: int) -> int:
    """A tar's size on disk: its members, two end-of-archive blocks, padded to whole records."""
    return -(-(members_bytes + 2 * TAR_BLOCK) // TAR_RECORD) * TAR_RECORD


def plan_shards(sizes: list[int], shard_size: int) -> list[list[int]]:
    """Indices into `sizes` (video bytes), grouped greedily into tar shards of at most
    `shard_size` bytes on disk (a video too large for that gets a shard of its own)."""
    shards: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        cost = tar_sample_bytes(size)
        if not shards or (shards[-1] and tar_file_bytes(used + cost) > shard_size):
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += cost
    return shards


def _write_shard(path: Path, entries: list[ManifestEntry], manifest: Manifest) -> None:
    import webdataset as wds

    # mtime fixed: the same videos give byte-identical shards.
    with atomic_path(path) as tmp, open(tmp, "wb") as f, wds.TarWriter(f, mtime=0.0) as tar:
        for e in entries:
            tar.write({"__key__": sample_key(e), _extension(e): _read(e), "cls": e.label,
                       "json": {"label": manifest.classes[e.label], "row": e.row,
                                "path": os.path.relpath(e.path, Path(manifest.source).parent)}})


def _read(entry: ManifestEntry) -> bytes:
    try:
        return Path(entry.path).read_bytes()
    except OSError as e:  # vanished or unreadable since planning: the shard is not written
        raise SfaError(f"cannot read {entry.path}: {e.strerror or e}") from None


def _extension(entry: ManifestEntry) -> str:
    ext = Path(entry.path).suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise SfaError(f"cannot pack {entry.path}: the reader only takes {', '.join(VIDEO_EXTENSIONS)} members")
    return ext.lstrip(".")


def pack_wds(
    manifest: Manifest, out: str | os.PathLike, shard_size: int, *, prefix: str, progress: bool = True
) -> PackResult:
    """Write (or finish writing) the shards of `manifest` into `out`. Videos that are missing are
    left out and listed in `out/missing.txt`."""
    out = Path(out)
    present: list[ManifestEntry] = []
    missing: list[str] = []
    for e in manifest.entries:
        if os.path.isfile(e.path):
            present.append(e)
        else:
            missing.append(str(e.path))
    for e in present:
        _extension(e)  # refuse before anything is written
    if not present:
        raise SfaError(
            f"none of the {len(manifest)} videos of {manifest.source} exist (first: {missing[0]}); check --root"
        )
    groups = plan_shards([os.path.getsize(e.path) for e in present], shard_size)
    names = [f"{prefix}-{i:06d}.tar" for i in range(len(groups))]
    plan = {"format": 1, "kind": "wds-pack", "manifest": str(Path(manifest.source).resolve()),
            "digest": manifest_digest(manifest), "shard_size": shard_size,
            "shards": [{"name": n, "keys": [sample_key(present[i]) for i in g]} for n, g in zip(names, groups)]}
    _prepare(out, plan)
    todo = [(n, g) for n, g in zip(names, groups) if not (out / n).is_file()]
    if len(todo) < len(names):
        log.info("resuming the pack in %s: %d of %d shards already written", out, len(names) - len(todo), len(names))
    for name, group in tqdm(todo, unit="shard", desc="pack-wds", disable=not progress):
        _write_shard(out / name, [present[i] for i in group], manifest)
    if missing:
        (out / "missing.txt").write_text("".join(m + "\n" for m in missing))
        log.warning("%d videos of %s are missing and were left out (listed in %s)", len(missing), manifest.source,
                    out / "missing.txt")
    atomic_write_json(out / CLASSES_FILE, manifest.classes)
    pattern = str(out / f"{prefix}-{{000000..{len(names) - 1:06d}}}.tar") if len(names) > 1 else str(out / names[0])
    return PackResult(out, pattern, len(names), len(present), len(todo), missing)


def _prepare(out: Path, plan: dict[str, Any]) -> None:
    """Record the plan, or check that the shards already in `out` were planned the same way."""
    found = folder_marker(out, PLAN_FILE, what="a pack of WebDataset shards", advice="choose another --out")
    if found is None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / PLAN_FILE, plan)
    elif found != plan:
        raise SfaError(f"{out} holds shards of another pack (another manifest, content or --shard-size); "
                       f"remove it or choose another --out")
