"""What every video reader is: the `VideoReader` interface and the checks all readers share.

A reader returns RGB uint8 frames `[T, H, W, 3]` for requested frame indices; indices past the
last frame are clamped to it (containers sometimes report more frames than decode). Each backend
has its own module (`decord_reader`, `pyav_reader`, `h5_reader`); `reader.open_video` picks one.
"""

from __future__ import annotations

import io
import os
from typing import Protocol, Sequence, Union

import numpy as np

from sfa_cache.errors import VideoReadError, first_line

Source = Union[str, bytes]  # a file path, or a whole encoded video in memory


class VideoReader(Protocol):
    path: str
    num_frames: int
    last_indices: np.ndarray  # the frames the last get_frames call actually returned, [T]

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """[T] frame indices -> [T, H, W, 3] uint8 RGB."""
        ...


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def source_name(source: Source | os.PathLike, name: str) -> str:
    """The name errors give the video, once the checks every source gets have passed (a file
    exists and is not empty; bytes are not empty)."""
    if isinstance(source, bytes):
        if not source:
            raise VideoReadError(name or "<bytes>", "empty member (0 bytes)")
        return name or "<bytes>"
    check_file(str(source))
    return str(source)


def probe_bytes(name: str, data: bytes) -> None:
    """A cheap PyAV probe before decord sees in-memory bytes: decord logs an unreadable buffer's
    *content* as its file name, which would pour megabytes of binary onto the terminal."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise VideoReadError(name, "no video stream")
    except VideoReadError:
        raise
    except Exception as e:  # av.error.FFmpegError and friends; strerror drops the errno and '<none>' name
        raise VideoReadError(name, getattr(e, "strerror", None) or first_line(e)) from None


def clamp_indices(indices: Sequence[int], num_frames: int) -> np.ndarray:
    """Frame indices past the last frame (or below 0) moved onto it."""
    return np.clip(np.asarray(indices, dtype=np.int64), 0, num_frames - 1)
