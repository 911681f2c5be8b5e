"""Where a video lives: a file, a member of a tar shard (WebDataset), or frames in an HDF5 file.

A `ManifestEntry.path` is one of these; `open_video` turns any of them into a reader. They are
small frozen dataclasses so that millions of them pickle cheaply to data workers, and each has
an `identity` that changes when its content may have changed (it feeds the manifest digest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union


@dataclass(frozen=True)
class TarMember:
    """A video stored as one member of an uncompressed tar: `size` bytes at `offset` of `tar`.

    Read by seeking, so a sample costs one small read, not a pass over the shard.
    """

    tar: str
    name: str  # the member's name, e.g. '00000042-abseiling_001.mp4'
    offset: int  # of the member's data (past its header)
    size: int

    def __str__(self) -> str:
        return f"{self.tar}:{self.name}"

    def read(self) -> bytes:
        with open(self.tar, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"short read: {len(data)} of {self.size} bytes")
        return data

    def identity(self) -> str:
        return f"{os.path.abspath(self.tar)}|{self.name}|{self.offset}|{self.size}"


@dataclass(frozen=True)
class H5Video:
    """Frames of one video in an HDF5 file: the dataset `dataset` of `file` (see `data/h5_input.py`)."""

    file: str
    dataset: str  # absolute path inside the file, e.g. '/train/vid001/frames'

    def __str__(self) -> str:
        return f"{self.file}:{self.dataset}"

    def identity(self) -> str:
        """The file's size and modification time: HDF5 stores frames in place, so a dataset's
        own shape or storage size does not change when its frames are rewritten."""
        try:
            st = os.stat(self.file)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "-1"
        return f"{os.path.abspath(self.file)}|{self.dataset}|{stamp}"


VideoLocation = Union[Path, TarMember, H5Video]


def location_identity(location: VideoLocation) -> str:
    """A string that changes when the video's content may have changed (a file: path and size)."""
    if isinstance(location, (TarMember, H5Video)):
        return location.identity()
    path = os.path.abspath(location)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    return f"{path}|{size}"
