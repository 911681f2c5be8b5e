"""A `features` shard read in one pass: the streaming reader's and the resident load's fast path.

`write_shard` stores a shard's features as one Zarr v3 array made of a single shard file (the
`sharding_indexed` codec): inner chunks of one clip `[1, V, F, D]`, each `bytes -> compression
-> crc32c`, and at the end of the file an index of (offset, nbytes) per chunk with its own CRC32C.
Zarr reads such a file chunk by chunk through its event loop, which measured 2-3x the real work
(reading the file, checking each checksum, decompressing; docs/benchmarks.md). This module maps
the file once, checks the index's and every chunk's CRC32C exactly as Zarr does, and decodes the
chunks itself:

* `read_whole_features`: every clip into one [clips, V, F, D] array (a resident copy's load);
* `read_clip_frames`: only what a training batch takes, one view's T frames per clip, [n, T, D].
  Each chunk is decoded into a one-clip scratch buffer that stays in the CPU cache and the drawn
  frames are copied out, so the shard is never materialised (streaming's path: 4x fewer bytes
  written at T = F/4, and no 96 MiB allocation per shard).

Both handle only that layout, recognised from the array's zarr.json, and only for a compressor
whose entry in `codecs.CODECS` has a `decoder` (blosc, the default); anything else (another
compressor, an older layout) gets None and the caller reads through Zarr. Chunks the index marks
empty (Zarr does not store a chunk that is all fill value: a failed clip's NaN) come back as the
fill value, NaN.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from sfa_cache.cache.format.codecs import ChunkDecoder, codec_stored_as

EMPTY = 2**64 - 1  # the sharding index's (offset, nbytes) of a chunk that was not written
_INDEX_CODECS = ["bytes", "crc32c"]


def _chunk_decoder(names: list[str]) -> Optional[Callable[[], ChunkDecoder]]:
    """The decoder (factory) the codec table gives a chunk chain `bytes -> compression -> crc32c`,
    else None (an unknown chain, or a compressor that is read through Zarr)."""
    if len(names) < 2 or names[0] != "bytes" or names[-1] != "crc32c":
        return None
    codec = codec_stored_as(names[1:-1])
    return None if codec is None else codec.decoder


def _sharded_layout(meta: dict[str, Any]) -> Optional[tuple[tuple[int, ...], Callable[[], ChunkDecoder]]]:
    """(the array's shape, its chunks' decoder factory) when `meta` is the layout this module
    reads, else None."""
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
    decoder = _chunk_decoder(names)
    if (decoder is None or index_names != _INDEX_CODECS or not little
            or config.get("index_location", "end") != "end" or meta.get("fill_value") != "NaN"
            or tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]) != shape):
        return None
    inner = tuple(config["chunk_shape"])
    if inner[0] != 1 or inner[1:] != shape[1:]:
        return None
    return shape, decoder


class _ShardFile:
    """One shard file, memory-mapped, its index checked: clip rows decoded on demand."""

    def __init__(self, array_dir: Path, shape: tuple[int, ...], dtype: np.dtype, decoder: ChunkDecoder) -> None:
        import google_crc32c

        self._crc32c, self._codec = google_crc32c.value, decoder
        self.shape, self.dtype = shape, dtype
        self.path = array_dir / "c" / "/".join("0" * len(shape))
        # A missing file: every chunk was the fill value, so Zarr wrote no shard file. Mapped, not
        # read: the checksums and the decoder read the page cache in place (a 96 MiB shard in 18 ms
        # against 27 ms read into a new array, docs/benchmarks.md), and a uint8 array's slices are
        # views that google_crc32c accepts (bytes slices would copy). A finished cache's shard files
        # are never rewritten (written before their marker and cache.json), so none shrinks under the map.
        self.data = np.memmap(self.path, dtype=np.uint8, mode="r") if self.path.is_file() else None
        n = shape[0]
        self.index: list[list[int]] = [[EMPTY, EMPTY]] * n
        if self.data is not None:
            tail = self.data[-(16 * n + 4):]
            if len(tail) != 16 * n + 4 or self._stored_crc(tail[-4:]) != self._crc32c(tail[:-4]):
                raise ValueError(f"{self.path}: the shard index's checksum does not match (corrupt data)")
            self.index = np.frombuffer(tail[:-4], dtype="<u8").reshape(n, 2).tolist()

    def decode(self, row: int, out: np.ndarray) -> None:
        """Clip `row`'s chunk, its checksum verified, into the flat `out` ([V * F * D] of the
        array's dtype); the fill value, NaN, for a chunk the index marks empty."""
        offset, nbytes = self.index[row]
        if offset == EMPTY and nbytes == EMPTY:
            out[:] = np.nan
            return
        assert self.data is not None
        payload = self.data[offset:offset + nbytes - 4]
        if self._stored_crc(self.data[offset + nbytes - 4:offset + nbytes]) != self._crc32c(payload):
            raise ValueError(f"{self.path}: chunk {row}'s checksum does not match (corrupt data)")
        self._codec.decode(payload, out=out)

    @staticmethod
    def _stored_crc(stored: np.ndarray) -> int:
        return int.from_bytes(stored.tobytes(), "little")


def _open(array_dir: Path) -> Optional[_ShardFile]:
    meta = json.loads((array_dir / "zarr.json").read_text())
    layout = _sharded_layout(meta)
    if layout is None:
        return None
    shape, decoder = layout
    return _ShardFile(array_dir, shape, np.dtype(meta["data_type"]), decoder())


def read_whole_features(array_dir: Path) -> Optional[np.ndarray]:
    """The `features` array stored in `array_dir`, [clips, V, F, D] in its dtype, or None when it
    is not in the layout this module reads. A checksum that does not match raises ValueError."""
    shard = _open(array_dir)
    if shard is None:
        return None
    out = np.empty(shard.shape, dtype=shard.dtype)
    rows = out.reshape(shard.shape[0], -1)
    for row in range(shard.shape[0]):
        shard.decode(row, rows[row])
    return out


def read_clip_frames(array_dir: Path, rows: np.ndarray, views: np.ndarray, frames: np.ndarray) -> Optional[np.ndarray]:
    """rows [n] (clips of this shard), views [n], frames [n, T] -> [n, T, D] in the array's dtype:
    for each clip, view views[i]'s frames frames[i]; None when the array is not in the layout this
    module reads. A checksum that does not match raises ValueError."""
    shard = _open(array_dir)
    if shard is None:
        return None
    out = np.empty((len(rows), frames.shape[1], shard.shape[-1]), dtype=shard.dtype)
    scratch = np.empty(shard.shape[1:], dtype=shard.dtype)  # one clip [V, F, D], reused
    for i, (row, view) in enumerate(zip(rows.tolist(), views.tolist())):
        shard.decode(row, scratch.reshape(-1))
        np.take(scratch[view], frames[i], axis=0, out=out[i])
    return out
