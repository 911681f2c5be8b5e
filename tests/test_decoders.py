"""The three decoders (decord, PyAV, torchcodec) on the files that trip decoders up: variable frame
rate, .avi / .mkv containers, one frame, in-memory bytes, truncated streams. Frames are checked
against each other, and against the index each frame encodes (`conftest.index_frames`)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import decoders, frame_ids, index_frames, needs_decoder

from sfa_cache.errors import VideoReadError
from sfa_cache.video.locations import TarMember
from sfa_cache.video.reader import BACKENDS, open_video

ENCODED = ("decord", "pyav", "torchcodec")


def _write(path: Path, frames: np.ndarray, *, fmt: str, codec: str, pts_ms: list[int] | None = None) -> Path:
    """Frames [T, H, W, 3] -> `path` in container `fmt` with `codec`; `pts_ms` gives each frame its
    own presentation time (variable frame rate), else 25 fps."""
    import av

    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"threads": "1"} | ({"crf": "18", "x264-params": "mbtree=0"} if codec == "libx264" else {})
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Index-coded clips of 20 frames: VFR .mp4 (gaps of 10-120 ms), MPEG-4 .avi, H.264 .mkv."""
    d = tmp_path_factory.mktemp("odd-videos")
    frames = index_frames(20)
    gaps = np.random.default_rng(3).choice([10, 40, 120], size=20)
    return {
        "vfr": _write(d / "vfr.mp4", frames, fmt="mp4", codec="libx264", pts_ms=np.cumsum(gaps).tolist()),
        "avi": _write(d / "clip.avi", frames, fmt="avi", codec="mpeg4"),
        "mkv": _write(d / "clip.mkv", frames, fmt="matroska", codec="libx264"),
    }


def test_every_encoded_video_backend_is_offered() -> None:
    assert set(ENCODED) <= set(BACKENDS)


@pytest.mark.parametrize("backend", decoders(*ENCODED))
@pytest.mark.parametrize("name", ["avi", "mkv"])
def test_containers_decode_every_frame_in_order(odd_videos, backend: str, name: str) -> None:
    reader = open_video(odd_videos[name], backend)
    assert reader.num_frames == 20
    assert frame_ids(reader.get_frames([19, 0, 7, 7, 12])) == [19, 0, 7, 7, 12]


@pytest.mark.parametrize("backend", decoders(*ENCODED))
def test_variable_frame_rate_gives_the_frames_asked_for(odd_videos, backend: str) -> None:
    """Frame n is the n-th frame shown, however unevenly the frames are spaced in time."""
    reader = open_video(odd_videos["vfr"], backend)
    assert reader.num_frames == 20
    asked = [0, 1, 2, 5, 9, 13, 18, 19]
    assert frame_ids(reader.get_frames(asked)) == asked


@needs_decoder("torchcodec")
def test_torchcodec_matches_decord_and_pyav(videos) -> None:
    """The same H.264 decode through three libraries: equal up to colour-conversion rounding."""
    idx = [0, 3, 4, 11, 4]
    frames = {b: open_video(videos["textured"], b).get_frames(idx).astype(np.int16) for b in ENCODED}
    for other in ("decord", "pyav"):
        diff = np.abs(frames["torchcodec"] - frames[other])
        assert frames["torchcodec"].shape == (5, 48, 64, 3)
        assert diff.mean() < 1.0 and diff.max() <= 8, other


@pytest.mark.parametrize("backend", decoders(*ENCODED))
def test_bytes_decode_like_the_file(videos, backend: str) -> None:
    """WebDataset members reach the reader as bytes: the same frames as from the file."""
    path = videos["index24"]
    from_file = open_video(path, backend).get_frames([2, 17])
    member = open_video(TarMember(str(path), "index24.mp4", 0, path.stat().st_size), backend)
    assert member.path.endswith("index24.mp4") and member.num_frames == 24
    np.testing.assert_array_equal(member.get_frames([2, 17]), from_file)


@needs_decoder("torchcodec")
def test_torchcodec_single_frame_and_clamping(videos) -> None:
    reader = open_video(videos["one"], "torchcodec")
    assert reader.num_frames == 1
    assert frame_ids(reader.get_frames([0, 5])) == [0, 0]
    assert reader.last_indices.tolist() == [0, 0]


@needs_decoder("torchcodec")
def test_torchcodec_errors_name_the_file(videos) -> None:
    with pytest.raises(VideoReadError) as info:
        open_video(videos["truncated"], "torchcodec")
    assert info.value.path == str(videos["truncated"]) and info.value.reason
