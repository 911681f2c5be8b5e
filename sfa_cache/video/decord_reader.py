"""decord: the default decoder of encoded video (files and in-memory tar members).

decord is imported when a reader is made, not at module import: a DataLoader parent process
must not initialise decord / FFmpeg before its workers start (docs/architecture.md).
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from sfa_cache.errors import SfaError, VideoReadError, first_line
from sfa_cache.video.base import Source, clamp_indices, probe_bytes, source_name


def check_installed() -> None:
    """A one-line SfaError saying what to install when decord cannot be imported here."""
    try:
        import decord  # noqa: F401  (imported for its error only)
    except ImportError as e:
        raise SfaError(f"--backend decord needs the decord package: {first_line(e)} (pip install decord; it has "
                       "wheels for Linux and Windows on x86-64; elsewhere use --backend pyav)") from None


class DecordReader:
    """decord.VideoReader on the CPU, single-threaded (parallelism comes from data workers).

    `source`: a path, or the encoded video's bytes (then `name` names it in errors).
    """

    def __init__(self, source: Source | os.PathLike, name: str = "") -> None:
        import decord

        self.path = source_name(source, name)
        target: object = self.path
        if isinstance(source, bytes):
            probe_bytes(self.path, source)
            target = io.BytesIO(source)
        try:
            self._vr = decord.VideoReader(target, ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self._vr)
        except Exception as e:  # decord raises DECORDError / RuntimeError with FFmpeg's message
            raise VideoReadError(self.path, first_line(e)) from None
        if self.num_frames < 1:
            raise VideoReadError(self.path, "no decodable video frames")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        self.last_indices = clamp_indices(indices, self.num_frames)
        try:
            return self._vr.get_batch(self.last_indices.tolist()).asnumpy()
        except Exception as e:
            raise VideoReadError(self.path, f"decode failed: {first_line(e)}") from None
