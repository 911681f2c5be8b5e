"""torchcodec: PyTorch's own FFmpeg decoder (maintained, where decord is not since 2022).

torchcodec is imported when a reader is made, not at module import, for the same reason as decord:
a DataLoader parent process must not initialise FFmpeg before its workers start. It needs the
FFmpeg shared libraries (4 to 8) on the system (`apt-get install libavcodec59 libavformat59 ...`
on Debian 12) and a torchcodec release paired with the installed torch (docs/data.md).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from sfa_cache.errors import SfaError, VideoReadError, first_line
from sfa_cache.video.base import Source, clamp_indices, source_name


def import_torchcodec_decoder() -> Any:
    """torchcodec's VideoDecoder class, or a one-line SfaError saying what to install."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:  # not installed, or installed without loadable FFmpeg libraries
        raise SfaError(f"--backend torchcodec needs torchcodec and the FFmpeg libraries: {first_line(e)} "
                       "(pip install 'sfa-cache[torchcodec]'; apt-get install libavcodec59 libavformat59)") from None
    return VideoDecoder


class TorchCodecReader:
    """torchcodec.decoders.VideoDecoder on the CPU, one FFmpeg thread (parallelism comes from
    data workers), exact seeking: the file's packets are scanned once at open, so frame counts
    and positions are the decoded ones, also on variable-frame-rate files.

    `source`: a path, or the encoded video's bytes (then `name` names it in errors).
    """

    def __init__(self, source: Source | os.PathLike, name: str = "") -> None:
        video_decoder = import_torchcodec_decoder()
        self.path = source_name(source, name)
        try:
            self._decoder = video_decoder(source if isinstance(source, bytes) else self.path, seek_mode="exact",
                                          dimension_order="NHWC", num_ffmpeg_threads=1, device="cpu")
            self.num_frames = len(self._decoder)
        except Exception as e:  # torchcodec raises RuntimeError / ValueError with FFmpeg's message
            raise VideoReadError(self.path, first_line(e)) from None
        if self.num_frames < 1:
            raise VideoReadError(self.path, "no decodable video frames")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """[T] frame indices -> [T, H, W, 3] uint8 RGB; each distinct frame decoded once, in order."""
        self.last_indices = clamp_indices(indices, self.num_frames)
        wanted, position = np.unique(self.last_indices, return_inverse=True)
        try:
            frames = self._decoder.get_frames_at(indices=wanted.tolist()).data.numpy()
        except Exception as e:
            raise VideoReadError(self.path, f"decode failed: {first_line(e)}") from None
        return frames[position]
