"""PyAV: decoding from the start of the stream, exact on the files where decord's seeking is not."""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np

from sfa_cache.errors import SfaError, VideoReadError, first_line
from sfa_cache.video.base import Source, clamp_indices, source_name


def check_installed() -> None:
    """A one-line SfaError saying what to install when PyAV cannot be imported here."""
    try:
        import av  # noqa: F401  (imported for its error only)
    except ImportError as e:
        raise SfaError(f"--backend pyav needs the av package (PyAV): {first_line(e)} (pip install av)") from None


class PyAVReader:
    """PyAV decoding from the start of the stream (exact frame positions, no seek errors on VFR).

    `source`: a path, or the encoded video's bytes (then `name` names it in errors).
    """

    def __init__(self, source: Source | os.PathLike, name: str = "") -> None:
        self.path = source_name(source, name)
        self._source = source
        try:
            with self._open() as container:
                if not container.streams.video:
                    raise VideoReadError(self.path, "no video stream")
                stream = container.streams.video[0]
                # stream.frames comes from the container header and is 0 for some formats;
                # counting demuxed packets is exact for those and needs no decoding.
                self.num_frames = stream.frames or sum(
                    1 for p in container.demux(stream) if p.size > 0
                )
        except VideoReadError:
            raise
        except Exception as e:  # av.error.FFmpegError and friends
            raise VideoReadError(self.path, first_line(e)) from None
        if self.num_frames < 1:
            raise VideoReadError(self.path, "no decodable video frames")

    def _open(self) -> Any:
        """A fresh av.InputContainer on the source (bytes get a new stream each time)."""
        import av

        source = self._source
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        wanted = clamp_indices(indices, self.num_frames)
        last = int(wanted.max())
        frames: dict[int, np.ndarray] = {}
        keep = set(wanted.tolist())
        try:
            with self._open() as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    if i in keep:
                        frames[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
        except Exception as e:
            if not frames:
                raise VideoReadError(self.path, f"decode failed: {first_line(e)}") from None
        if not frames:
            raise VideoReadError(self.path, "no frame decoded")
        # A stream that decodes fewer frames than its header claims: clamp to what decoded.
        decoded = sorted(frames)
        self.last_indices = np.array([i if i in frames else decoded[-1] for i in wanted.tolist()], dtype=np.int64)
        return np.stack([frames[i] for i in self.last_indices.tolist()])
