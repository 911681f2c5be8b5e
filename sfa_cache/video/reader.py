"""Video readers: decord (default) and PyAV, one interface, one error type.

Both return RGB uint8 frames `[T, H, W, 3]` for requested frame indices. Indices past the last
frame are clamped to it (containers sometimes report more frames than decode). The decoders are
imported lazily so that merely importing this module in a DataLoader parent process does not
initialise decord / FFmpeg before workers fork (see docs/architecture.md).

Both decode a file or bytes in memory (a WebDataset tar member: no temp-file round trip).
Frames stored in HDF5 need no decoder and have their own reader (`h5_reader.py`).
"""

from __future__ import annotations

import io
import os
from typing import Any, Protocol, Sequence, Union

import numpy as np

from sfa_cache.errors import VideoReadError, first_line
from sfa_cache.video.locations import H5Video, TarMember, VideoLocation

Source = Union[str, bytes]  # a file path, or a whole encoded video in memory

BACKENDS = ("decord", "pyav")


class VideoReader(Protocol):
    path: str
    num_frames: int
    last_indices: np.ndarray  # the frames the last get_frames call actually returned, [T]

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """[T] frame indices -> [T, H, W, 3] uint8 RGB."""
        ...


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def _source_name(source: Source | os.PathLike, name: str) -> str:
    """The name errors give the video, once the checks every source gets have passed (a file
    exists and is not empty; bytes are not empty)."""
    if isinstance(source, bytes):
        if not source:
            raise VideoReadError(name or "<bytes>", "empty member (0 bytes)")
        return name or "<bytes>"
    _check_file(str(source))
    return str(source)


def _check_bytes(name: str, data: bytes) -> None:
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


class DecordReader:
    """decord.VideoReader on the CPU, single-threaded (parallelism comes from data workers).

    `source`: a path, or the encoded video's bytes (then `name` names it in errors).
    """

    def __init__(self, source: Source | os.PathLike, name: str = "") -> None:
        import decord

        self.path = _source_name(source, name)
        target: object = self.path
        if isinstance(source, bytes):
            _check_bytes(self.path, source)
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


class PyAVReader:
    """PyAV decoding from the start of the stream (exact frame positions, no seek errors on VFR).

    `source`: a path, or the encoded video's bytes (then `name` names it in errors).
    """

    def __init__(self, source: Source | os.PathLike, name: str = "") -> None:
        self.path = _source_name(source, name)
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


def open_video(location: VideoLocation | str, backend: str = "decord") -> VideoReader:
    """Open a video file, tar member or HDF5 frame store; raises VideoReadError when unreadable.

    `backend` picks the decoder of encoded video (files and tar members); HDF5 frames need none.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(location, H5Video):
        from sfa_cache.video.h5_reader import H5FrameReader

        return H5FrameReader(location)
    source: Source | os.PathLike = location
    name = ""
    if isinstance(location, TarMember):
        name = str(location)
        try:
            source = location.read()
        except OSError as e:
            raise VideoReadError(name, f"cannot read the tar member: {e}") from None
    return DecordReader(source, name) if backend == "decord" else PyAVReader(source, name)


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
