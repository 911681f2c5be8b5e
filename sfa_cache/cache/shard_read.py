"""A whole `features` shard in one pass: the streaming reader's fast path.

`write_shard` stores a shard's features as one Zarr v3 array made of a single shard file (the
`sharding_indexed` codec): inner chunks of one clip `[1, V, F, D]`, each `bytes -> blosc ->
crc32c`, and at the end of the file an index of (offset, nbytes) per chunk with its own CRC32C.
Zarr reads such a file chunk by chunk through its event loop, which measured 2-3x the real work
(reading the file, checking each checksum, decompressing; docs/benchmarks.md). This module reads
the file once, checks the index's and every chunk's CRC32C exactly as Zarr does, and decodes each
chunk straight into the output.

It handles only that layout, recognised from the array's zarr.json; anything else (another
compressor, an older layout) gets None and the caller reads through Zarr. Chunks the index marks
empty (Zarr does not store a chunk that is all fill value: a failed clip's NaN) come back as the
fill value, NaN.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

EMPTY = 2**64 - 1  # the sharding index's (offset, nbytes) of a chunk that was not written
_CHUNK_CODECS = ["bytes", "blosc", "crc32c"]
_INDEX_CODECS = ["bytes", "crc32c"]


def _sharded_layout(meta: dict[str, Any]) -> Optional[tuple[int, ...]]:
    """The array's shape when `meta` is the layout this module reads, else None."""
    codecs = meta.get("codecs") or []
    if sys.byteorder != "little" or meta.get("zarr_format") != 3 or len(codecs) != 1:
        return None
    if codecs[0].get("name") != "sharding_indexed":
        return None
    config = codecs[0]["configuration"]
    names = [c["name"] for c in config["codecs"]]
    index_names = [c["name"] for c in config["index_codecs"]]
    little = all(c.get("configuration", {}).get("endian", "little") == "little"
                 for c in config["codecs"] + config["index_codecs"] if c["name"] == "bytes")
    shape = tuple(meta["shape"])
    if (names != _CHUNK_CODECS or index_names != _INDEX_CODECS or not little
            or config.get("index_location", "end") != "end" or meta.get("fill_value") != "NaN"
            or tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]) != shape):
        return None
    inner = tuple(config["chunk_shape"])
    if inner[0] != 1 or inner[1:] != shape[1:]:
        return None
    return shape


def read_whole_features(array_dir: Path) -> Optional[np.ndarray]:
    """The `features` array stored in `array_dir`, [clips, V, F, D] in its dtype, or None when it
    is not in the layout this module reads. A checksum that does not match raises ValueError."""
    import google_crc32c
    from numcodecs import Blosc

    meta = json.loads((array_dir / "zarr.json").read_text())
    shape = _sharded_layout(meta)
    if shape is None:
        return None
    out = np.full(shape, np.nan, dtype=np.dtype(meta["data_type"]))
    data_file = array_dir / "c" / "/".join("0" * len(shape))
    if not data_file.is_file():  # every chunk was the fill value: Zarr wrote no shard file
        return out
    data = data_file.read_bytes()
    n = shape[0]
    tail = data[-(16 * n + 4):]
    if len(tail) != 16 * n + 4 or _crc(tail[-4:]) != google_crc32c.value(tail[:-4]):
        raise ValueError(f"{data_file}: the shard index's checksum does not match (corrupt data)")
    index = np.frombuffer(tail[:-4], dtype="<u8").reshape(n, 2).tolist()
    rows = out.reshape(n, -1)
    codec = Blosc()
    for row, (offset, nbytes) in enumerate(index):
        if offset == EMPTY and nbytes == EMPTY:
            continue
        payload = data[offset:offset + nbytes - 4]
        if _crc(data[offset + nbytes - 4:offset + nbytes]) != google_crc32c.value(payload):
            raise ValueError(f"{data_file}: chunk {row}'s checksum does not match (corrupt data)")
        codec.decode(payload, out=rows[row])
    return out


def _crc(stored: bytes) -> int:
    return int.from_bytes(stored, "little")
