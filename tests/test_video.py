"""Video decoding (decord and PyAV on real files), frame sampling, clip transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import frame_ids

from sfa_cache.errors import SfaError, VideoReadError
from sfa_cache.video.reader import BACKENDS, open_video
from sfa_cache.video.sampling import uniform_indices
from sfa_cache.video.transforms import AugmentConfig, eval_transform, rand_augment, train_transform


@pytest.mark.parametrize("backend", BACKENDS)
class TestReader:
    def test_decodes_requested_frames_in_order(self, videos, backend: str) -> None:
        reader = open_video(videos["index24"], backend)
        assert reader.num_frames == 24
        frames = reader.get_frames([0, 5, 5, 23, 2])
        assert frames.dtype == np.uint8 and frames.shape == (5, 32, 32, 3)
        assert frame_ids(frames) == [0, 5, 5, 23, 2]

    def test_out_of_range_indices_are_clamped(self, videos, backend: str) -> None:
        reader = open_video(videos["one"], backend)
        assert reader.num_frames == 1
        assert frame_ids(reader.get_frames([0, 3, 7])) == [0, 0, 0]

    @pytest.mark.parametrize("name, reason", [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("garbage", "cannot read video"),
        ("truncated", "cannot read video"),
    ])
    def test_unreadable_files_raise_the_project_error(self, videos, backend: str, name: str, reason: str) -> None:
        with pytest.raises(VideoReadError, match=reason) as info:
            open_video(videos[name], backend).get_frames([0])
        assert info.value.path == str(videos[name])
        assert info.value.reason
        assert isinstance(info.value, SfaError)


def test_backends_give_the_same_frames(videos) -> None:
    idx = [0, 3, 4, 11]
    a = open_video(videos["textured"], "decord").get_frames(idx).astype(np.int16)
    b = open_video(videos["textured"], "pyav").get_frames(idx).astype(np.int16)
    assert a.shape == b.shape == (4, 48, 64, 3)
    # Same H.264 decode; colour conversion may round differently by a level or two.
    assert np.abs(a - b).mean() < 1.0
    assert np.abs(a - b).max() <= 8


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown video backend"):
        open_video("x.mp4", "opencv")


# --- sampling -----------------------------------------------------------------------------------

def test_uniform_eval_is_centred_and_deterministic() -> None:
    assert uniform_indices(64, 8, train=False).tolist() == [4, 12, 20, 28, 36, 44, 52, 60]
    assert uniform_indices(64, 8, train=False).tolist() == uniform_indices(64, 8, train=False).tolist()


def test_uniform_train_draws_one_frame_per_segment() -> None:
    rng = np.random.default_rng(0)
    draws = np.stack([uniform_indices(64, 8, train=True, rng=rng) for _ in range(200)])
    segment = draws // 8
    assert (segment == np.arange(8)).all()  # every draw stays inside its segment
    assert len(np.unique(draws[:, 0])) == 8  # and covers the segment


@pytest.mark.parametrize("num_frames", [1, 3, 7])
@pytest.mark.parametrize("train", [True, False])
def test_short_videos_give_valid_repeated_indices(num_frames: int, train: bool) -> None:
    rng = np.random.default_rng(0)
    idx = uniform_indices(num_frames, 8, train=train, rng=rng)
    assert idx.shape == (8,)
    assert idx.min() >= 0 and idx.max() < num_frames
    assert (np.diff(idx) >= 0).all()


def test_long_video_uniform_covers_the_whole_video() -> None:
    idx = uniform_indices(100_000, 32, train=False)
    assert idx[0] < 100_000 / 32 and idx[-1] > 100_000 * 31 / 32


def test_sampling_rejects_nonpositive_frames() -> None:
    with pytest.raises(SfaError, match="frames must be >= 1"):
        uniform_indices(10, 0, train=False)


# --- transforms ---------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_train_transform_applies_one_draw_to_every_frame() -> None:
    frame = np.random.default_rng(0).integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    clip = np.stack([frame] * 6)
    for seed in range(10):
        out = train_transform(clip, 32, MEAN, STD, np.random.default_rng(seed))
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
        assert torch.equal(out[0], out[5]), "all frames of a clip get the same crop/flip/jitter"


def test_train_transform_is_random_across_draws_and_reproducible() -> None:
    clip = np.random.default_rng(0).integers(0, 255, size=(2, 40, 56, 3), dtype=np.uint8)
    a = train_transform(clip, 32, MEAN, STD, np.random.default_rng(1))
    b = train_transform(clip, 32, MEAN, STD, np.random.default_rng(1))
    c = train_transform(clip, 32, MEAN, STD, np.random.default_rng(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_flip_and_no_jitter() -> None:
    clip = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    clip[:, :, :8] = 255  # bright left band
    aug = AugmentConfig(min_scale=1 / (256 / 224), max_scale=1 / (256 / 224), flip_prob=1.0, color_jitter_prob=0.0)
    out = train_transform(clip, 32, MEAN, STD, np.random.default_rng(0), aug)
    assert out[0, 0, :, -4:].mean() > 0.9 and out[0, 0, :, :4].mean() < -0.9  # band moved right


def test_eval_transform_centre_crop_and_normalisation() -> None:
    clip = np.full((3, 48, 64, 3), 255, dtype=np.uint8)
    clip[:, 20:28, 28:36] = 0  # dark square in the centre
    out = eval_transform(clip, 32, MEAN, STD)
    assert out.shape == (3, 3, 32, 32)
    assert out.max() == pytest.approx(1.0)  # (1 - 0.5) / 0.5
    assert out[0, 0, 16, 16] < 0  # the centre stays in the crop
    assert torch.equal(out, eval_transform(clip, 32, MEAN, STD))


def test_rand_augment_is_one_draw_per_clip_from_its_seed() -> None:
    frame = torch.rand(3, 32, 32)
    clip = frame.expand(6, 3, 32, 32).contiguous()  # six identical frames
    outs = [rand_augment(clip, 2, 20, seed) for seed in range(12)]
    for out in outs:
        assert out.shape == clip.shape and 0.0 <= out.min() and out.max() <= 1.0
        assert all(torch.equal(out[0], out[t]) for t in range(1, 6))  # the same operations on every frame
    assert torch.equal(rand_augment(clip, 2, 20, 5), outs[5])  # a function of the seed, not the global RNG
    assert sum(not torch.allclose(o, clip) for o in outs) >= 9  # it does change the clip
    state = torch.random.get_rng_state()
    rand_augment(clip, 2, 20, 7)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    raw = (np.random.default_rng(0).random((4, 40, 48, 3)) * 255).astype(np.uint8)
    plain = train_transform(raw, 32, (0.5,) * 3, (0.5,) * 3, np.random.default_rng(1), AugmentConfig())
    again = train_transform(raw, 32, (0.5,) * 3, (0.5,) * 3, np.random.default_rng(1), AugmentConfig())
    augmented = train_transform(raw, 32, (0.5,) * 3, (0.5,) * 3, np.random.default_rng(1),
                                AugmentConfig(randaugment_ops=2, randaugment_magnitude=15))
    assert torch.equal(plain, again) and not torch.equal(plain, augmented)
