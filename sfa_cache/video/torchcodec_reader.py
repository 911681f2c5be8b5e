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

# What a Debian 12 machine lacks when torchcodec cannot load FFmpeg (docs/data.md says the same).
FFMPEG_PACKAGES = ("libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 "
                   "libavfilter8")
_INSTALL = f"pip install 'sfa-cache[torchcodec]' and FFmpeg's shared libraries (Debian 12: apt-get install " \
           f"{FFMPEG_PACKAGES})"


def import_torchcodec_decoder() -> Any:
    """torchcodec's VideoDecoder class, or a one-line SfaError saying what to install."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:  # not installed, or (before 0.17) installed without loadable FFmpeg libraries
        raise SfaError(f"--backend torchcodec needs torchcodec and FFmpeg: {first_line(e)} ({_INSTALL})") from None
    return VideoDecoder


def check_installed() -> None:
    """A one-line SfaError saying what to install when torchcodec cannot decode here.

    torchcodec >= 0.17 imports without FFmpeg's libraries and fails at the first video with a
    long message ("Could not load libtorchcodec. Likely causes: ..."): without this check a
    missing FFmpeg reads as thousands of bad videos. A few bytes that are no video tell the two
    apart: with FFmpeg loaded they fail as bad data, without it as a library that cannot load.
    """
    video_decoder = import_torchcodec_decoder()
    try:
        video_decoder(b"\x00" * 64, seek_mode="approximate")
    except Exception as e:  # FFmpeg's "invalid data" (loaded) or torchcodec's loader error (not)
        if "libtorchcodec" in str(e):
            raise SfaError(f"--backend torchcodec cannot load FFmpeg's libraries here; {_INSTALL}") from None


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
