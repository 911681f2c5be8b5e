"""Opening a video: the backend selector over files, tar members and HDF5 frame stores.

One module per backend (`decord_reader`, `pyav_reader`, `torchcodec_reader`, `h5_reader`), all behind the
`VideoReader` interface of `base`; this module only picks one. The decoders themselves are
imported when a reader is made, so importing this module initialises no decoder.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from sfa_cache.errors import SfaError, VideoReadError
from sfa_cache.video import decord_reader, pyav_reader, torchcodec_reader
from sfa_cache.video.base import Source, VideoReader
from sfa_cache.video.decord_reader import DecordReader
from sfa_cache.video.h5_reader import H5FrameReader
from sfa_cache.video.locations import H5Video, TarMember, VideoLocation
from sfa_cache.video.pyav_reader import PyAVReader
from sfa_cache.video.torchcodec_reader import TorchCodecReader

BACKENDS = ("decord", "pyav", "torchcodec")
_READERS = {"decord": DecordReader, "pyav": PyAVReader, "torchcodec": TorchCodecReader}
_INSTALL_CHECKS = {"decord": decord_reader.check_installed, "pyav": pyav_reader.check_installed,
                   "torchcodec": torchcodec_reader.check_installed}


def check_backend(backend: str) -> None:
    """A one-line SfaError for a decoder name this module does not know (user input)."""
    if backend not in BACKENDS:
        raise SfaError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def check_decoder(backend: str, locations: Sequence[VideoLocation | str] = ()) -> None:
    """Before any clip is tried: `backend` is known and can decode on this machine, else a
    one-line SfaError naming what to install (never a failure per clip, which would read as
    thousands of bad videos). Inputs that are all HDF5 frame stores need no decoder.
    """
    check_backend(backend)
    if locations and all(isinstance(loc, H5Video) for loc in locations):
        return
    _check_installed(backend)


@functools.lru_cache(maxsize=None)
def _check_installed(backend: str) -> None:  # once per process: a probe costs an import
    _INSTALL_CHECKS[backend]()


def open_video(location: VideoLocation | str, backend: str = "decord") -> VideoReader:
    """Open a video file, tar member or HDF5 frame store; raises VideoReadError when unreadable.

    `backend` picks the decoder of encoded video (files and tar members); HDF5 frames need none.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(location, H5Video):
        return H5FrameReader(location)
    source: Source | os.PathLike = location
    name = ""
    if isinstance(location, TarMember):
        name = str(location)
        try:
            source = location.read()
        except OSError as e:
            raise VideoReadError(name, f"cannot read the tar member: {e}") from None
    return _READERS[backend](source, name)


def read_index_sets(reader: VideoReader, index_sets: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames for several index sets (views, clips) of one video, decoding each frame once.

    -> per set (frames [T, H, W, 3] uint8, the frame numbers actually decoded [T]), which can
    differ from the asked ones when a stream ends early.
    """
    wanted = np.unique(np.concatenate([np.asarray(i) for i in index_sets]))
    decoded = reader.get_frames(wanted)
    out = []
    for idx in index_sets:
        pos = np.searchsorted(wanted, idx)
        out.append((decoded[pos], reader.last_indices[pos]))
    return out
