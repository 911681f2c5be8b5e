"""Write uint8 frames to an H.264 .mp4 with PyAV (synthetic data and test fixtures)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sfa_cache.atomic import atomic_path


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, crf: int = 18) -> None:
    """[T, H, W, 3] uint8 RGB -> H.264 yuv420p file at `path`, written atomically.

    H and W must be even (yuv420p). The bytes are a pure function of the frames: x264 runs
    single-threaded and without mbtree rate control. With mbtree on, this x264 build (core 165,
    in PyAV 18) encoded the same frames differently in about 1 of 10 runs, with decoded pixels
    off by up to 42 levels: measured, see docs/data.md.
    """
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    T, H, W, C = frames.shape
    if C != 3 or H % 2 or W % 2:
        raise ValueError(f"frames must be [T, H, W, 3] with even H, W; got {frames.shape}")
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            stream.options = {"crf": str(crf), "threads": "1", "preset": "veryfast", "x264-params": "mbtree=0"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
