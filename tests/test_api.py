"""The Python API (`sfa_cache.api`): the same values as the commands it stands for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sfa_cache import api
from sfa_cache.cache.extraction.decode_jobs import clip_spec_of
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.data.manifest import read_manifest
from sfa_cache.errors import VideoReadError
from sfa_cache.inference import predict
from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig


@pytest.fixture(scope="module")
def val_caches(tiny_run: Path, synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An eval cache and a 2-view train cache (seed 3) of the synthetic val videos, 6 frames."""
    root = tmp_path_factory.mktemp("api-caches")
    common = dict(model=str(tiny_run), manifest=str(synthetic / "val.csv"), cache_root=str(root), frames=6,
                  num_workers=0, progress=False)
    return {"eval": run_extract(ExtractConfig(mode="eval", **common)).cache_dir,
            "train": run_extract(ExtractConfig(views=2, seed=3, **common)).cache_dir}


def _videos(synthetic: Path, cache: FeatureCache) -> list[Path]:
    return [Path(e.path) for e in read_manifest(synthetic / "val.csv", cache.classes).entries]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_extract_features_equals_an_extraction(val_caches, tiny_run: Path, synthetic: Path, mode: str) -> None:
    """A list of videos in manifest order gives the cache's tokens, before float16 storage."""
    cache = FeatureCache(val_caches[mode])
    videos = _videos(synthetic, cache)
    train = mode == "train"
    tokens = api.extract_features(videos, run=tiny_run, frames=6, views=2 if train else 1, train=train, seed=3,
                                  augment=clip_spec_of(cache.index).augment, device="cpu")
    stored = np.stack([cache.features(i) for i in range(len(cache))]).astype(np.float32)
    assert tokens.shape == stored.shape == (len(videos), 2 if train else 1, 6, cache.dim)
    assert tokens.dtype == np.float32
    np.testing.assert_allclose(tokens, stored, rtol=2e-3, atol=2e-3)
    if train:
        assert not np.allclose(tokens[:, 0], tokens[:, 1])  # two different draws


def test_extract_features_on_a_broken_video(tiny_run: Path, synthetic: Path, videos) -> None:
    good = sorted((synthetic / "videos" / "val").glob("*.mp4"))[0]
    with pytest.raises(VideoReadError) as info:
        api.extract_features([good, videos["garbage"]], run=tiny_run, frames=4, device="cpu")
    assert info.value.path == str(videos["garbage"])
    tokens = api.extract_features([good, videos["garbage"]], run=tiny_run, frames=4, device="cpu", on_error="nan")
    assert np.isfinite(tokens[0]).all() and np.isnan(tokens[1]).all()


def test_cached_clips_vary_per_epoch_with_a_plain_shuffling_loader(val_caches) -> None:
    """set_epoch reaches DataLoader workers: every clip's tokens in epoch e are the dataset's
    draw (e, clip), the draw train-temporal's reader makes, and they change between epochs."""
    clips = api.cached_clips(val_caches["train"], frames=4, seed=1)
    labels = torch.as_tensor(clips.labels)
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for epoch in (0, 1):
        clips.set_epoch(epoch)
        torch.manual_seed(epoch)
        for x, y in DataLoader(clips, batch_size=4, shuffle=True, num_workers=2):
            assert x.shape[1:] == (4, FeatureCache(val_caches["train"]).dim) and x.dtype == torch.float32
            seen[epoch].extend(zip(x, y))
    for epoch in (0, 1):
        assert len(seen[epoch]) == len(clips)
        assert sorted(int(y) for _, y in seen[epoch]) == sorted(labels.tolist())
        expected = [clips[(epoch, i)][0] for i in range(len(clips))]
        for x, _ in seen[epoch]:  # each batch row is exactly one clip's draw for this epoch
            assert any(torch.equal(x, e) for e in expected)
    assert not all(torch.equal(clips[(0, i)][0], clips[(1, i)][0]) for i in range(len(clips)))
    clips.set_epoch(1)
    assert torch.equal(clips[0][0], clips[(1, 0)][0])


def test_load_run_and_predict_video(tiny_run: Path, synthetic: Path, videos) -> None:
    video = sorted((synthetic / "videos" / "val").glob("*.mp4"))[0]
    model, classes = api.load_run(tiny_run)
    assert not model.training and len(classes) == model.cfg.num_classes
    result = api.predict_video(video, run=tiny_run, top_k=3, device="cpu")
    assert result == predict(tiny_run, [video], top_k=3, device="cpu")[0]
    probs = [t["prob"] for t in result["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert {t["label"] for t in result["top"]} <= set(classes)
    with pytest.raises(VideoReadError, match="file not found"):
        api.predict_video(videos["missing"], run=tiny_run, device="cpu")
