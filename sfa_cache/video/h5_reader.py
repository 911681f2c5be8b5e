"""Frames stored in HDF5, read like a video: the same `get_frames` as the decoders.

Two dataset layouts hold one video each (docs/data.md, "HDF5 input"):

    uint8 [T, H, W, 3]                          raw RGB frames
    variable-length uint8 [T]                   one encoded JPEG or PNG image per frame
                                                (h5py.vlen_dtype(numpy.uint8))

Only the requested frames are read (and decoded). h5py is imported lazily and each process
opens a file once and keeps it (`h5_file`): HDF5 handles must not cross a fork, and reopening a
file for every clip costs more than reading the clip's frames.
"""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np

from sfa_cache.errors import VideoReadError, first_line
from sfa_cache.video.base import clamp_indices
from sfa_cache.video.locations import H5Video

_OPEN: dict[str, tuple[int, int, Any]] = {}  # path -> (pid, mtime_ns, h5py.File)


def h5_file(path: str) -> Any:
    """This process's read-only h5py.File on `path`, opened on first use (and again if the
    file changed on disk or the process is a fork of the one that opened it)."""
    import h5py

    pid, mtime = os.getpid(), os.stat(path).st_mtime_ns
    held = _OPEN.get(path)
    if held is None or held[0] != pid or held[1] != mtime:
        if held is not None and held[0] == pid:
            held[2].close()
        _OPEN[path] = (pid, mtime, h5py.File(path, "r"))
    return _OPEN[path][2]


def close_h5_files() -> None:
    """Close this process's cached handles (HDF5 refuses to open a file for writing in a process
    that holds it open for reading)."""
    for path, (pid, _, f) in list(_OPEN.items()):
        if pid == os.getpid():
            f.close()
        del _OPEN[path]


def is_encoded(dataset: Any) -> bool:
    """True for the variable-length uint8 layout (encoded images), False for raw frames."""
    import h5py

    base = h5py.check_vlen_dtype(dataset.dtype)
    return base is not None and np.dtype(base) == np.uint8


def layout_problem(dataset: Any) -> str | None:
    """Why `dataset` is not a video in one of the accepted layouts, or None when it is one."""
    if is_encoded(dataset):
        return None if dataset.ndim == 1 else f"encoded frames must be a 1-d dataset [T], got shape {dataset.shape}"
    if dataset.dtype == np.uint8 and dataset.ndim == 4 and dataset.shape[-1] == 3:
        return None
    return (f"expected uint8 [T, H, W, 3] frames or variable-length uint8 [T] encoded images, "
            f"got {dataset.dtype} {dataset.shape}")


def decode_image(data: np.ndarray) -> np.ndarray:
    """Encoded JPEG/PNG bytes (uint8 [N]) -> RGB uint8 [H, W, 3]. Raises OSError / ValueError."""
    from PIL import Image

    with Image.open(io.BytesIO(data.tobytes())) as image:
        return np.asarray(image.convert("RGB"))


class H5FrameReader:
    """Frames of one `H5Video`; raises VideoReadError like the video decoders do."""

    def __init__(self, location: H5Video) -> None:
        self.path = str(location)
        try:
            self._ds = h5_file(location.file)[location.dataset]
        except (OSError, KeyError) as e:
            raise VideoReadError(self.path, f"cannot open: {e}") from None
        problem = layout_problem(self._ds)
        if problem:
            raise VideoReadError(self.path, problem)
        self._encoded = is_encoded(self._ds)
        self.num_frames = int(self._ds.shape[0])
        if self.num_frames < 1:
            raise VideoReadError(self.path, "no frames")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """[T] frame indices -> [T, H, W, 3] uint8 RGB (indices past the end are clamped)."""
        self.last_indices = clamp_indices(indices, self.num_frames)
        wanted, inverse = np.unique(self.last_indices, return_inverse=True)  # each frame read once
        frames = []
        for i in wanted.tolist():
            # One read per frame: h5py's list indexing (ds[[2, 6, 10]]) is ~300x slower than this
            # on one-frame chunks (benchmarks/input_formats.py).
            try:
                stored = self._ds[i]
            except (OSError, ValueError) as e:  # an unreadable chunk
                raise VideoReadError(self.path, f"cannot read frame {i}: {first_line(e, 200)}") from None
            if self._encoded:
                try:
                    stored = decode_image(stored)
                except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError
                    raise VideoReadError(self.path, f"frame {i} is not a decodable JPEG/PNG image") from None
            frames.append(stored)
        if len({f.shape for f in frames}) > 1:
            raise VideoReadError(self.path, f"frames of different sizes: {sorted({f.shape for f in frames})[:3]}")
        return np.stack(frames)[inverse]
