"""The compressors a cache's `features` array can be stored with: one table, one entry each.

Everything a compressor means lives in its `Codec`:

    name       what `--compressor` takes and extract.json records (part of the cache key)
    codecs()   the Zarr v3 bytes-to-bytes chain of each one-clip chunk (`write.write_shard`)
    stored_as  the names that chain has in the array's zarr.json (how a reader recognises it)
    decoder()  the one-pass reader's decoder of a chunk's payload (`fast_read.py`), or None:
               shards stored with it are read through Zarr

Every chain ends with a CRC32C per chunk (added by `Codec.codecs`, not by each entry): zstd
frames carry no checksum of their own, and a flipped bit on disk otherwise decodes silently into
wrong features. With it, reading a corrupt clip raises instead.

A new compressor is one more entry in `CODECS` (docs/architecture.md); its name reaches the
command line's choices, config validation and the index's check from here. The measurements
behind the entries are in docs/benchmarks.md. Nothing heavy is imported at module level: the
command line reads `COMPRESSORS` to build its --help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence


class ChunkDecoder(Protocol):
    """A numcodecs-style decoder: one chunk's compressed payload -> its bytes, into `out`."""

    def decode(self, buf: Any, out: Any = None) -> Any: ...


@dataclass(frozen=True)
class Codec:
    """One compressor of the features array (module docstring)."""

    name: str
    compression: Callable[[], list[Any]]  # -> the Zarr codecs before the checksum (zarr imported when called)
    stored_as: tuple[str, ...]  # the names of `compression`'s codecs in zarr.json, in order
    decoder: Optional[Callable[[], ChunkDecoder]] = None  # the one-pass reader's; None: read through Zarr

    def codecs(self) -> list[Any]:
        """The chunk's whole bytes-to-bytes chain as written: the compression, then a CRC32C."""
        from zarr.codecs import Crc32cCodec

        return [*self.compression(), Crc32cCodec()]


def _zstd() -> list[Any]:
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=3)]


def _blosc_lz4() -> list[Any]:
    from zarr.codecs import BloscCodec

    # Byte shuffle groups the exponent bytes of fp16 values together.
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


def _blosc_decoder() -> ChunkDecoder:
    from numcodecs import Blosc

    return Blosc()  # a blosc frame says its own compressor, level and shuffle: no settings to repeat


def _uncompressed() -> list[Any]:
    return []


# The order is the command line's and the benchmarks'. Only blosc, the default, has the one-pass
# reader: the others are read through Zarr (slower, same values).
CODECS: tuple[Codec, ...] = (
    Codec("zstd", _zstd, ("zstd",)),
    Codec("blosc", _blosc_lz4, ("blosc",), _blosc_decoder),
    Codec("none", _uncompressed, ()),
)
COMPRESSORS: tuple[str, ...] = tuple(c.name for c in CODECS)


def codec_named(name: str) -> Codec:
    """The entry of `--compressor name`; ValueError for a name the table does not hold."""
    for codec in CODECS:
        if codec.name == name:
            return codec
    raise ValueError(f"unknown compressor {name!r}; choose one of {', '.join(COMPRESSORS)}")


def codec_stored_as(names: Sequence[str]) -> Optional[Codec]:
    """The entry whose compression is stored under these zarr.json codec names, or None."""
    for codec in CODECS:
        if tuple(names) == codec.stored_as:
            return codec
    return None
