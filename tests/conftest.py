"""Shared fixtures: real .mp4 files written with PyAV, a tiny synthetic dataset, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sfa_cache.data.manifest import infer_classes
from sfa_cache.data.synthetic import SyntheticConfig, make_synthetic
from sfa_cache.errors import SfaError
from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.run.record import RunRecord
from sfa_cache.run.weights import save_model_weights
from sfa_cache.video.writer import write_video

TINY_BACKBONE = "vit_tiny_patch16_224"


def decoder_missing(backend: str) -> str:
    """Why `backend` cannot decode on this machine ('' when it can): torchcodec needs FFmpeg's
    shared libraries, which pip cannot install. `.ci/run` installs them and sets
    SFA_REQUIRE_DECODERS=1, so that in CI a decoder that cannot load fails its tests instead of
    skipping them."""
    from sfa_cache.video.reader import check_decoder

    if os.environ.get("SFA_REQUIRE_DECODERS") == "1":
        return ""
    try:
        check_decoder(backend)
    except SfaError as e:
        return str(e)
    return ""


def needs_decoder(backend: str) -> pytest.MarkDecorator:
    """Skip (with the reason in the summary) where `backend` cannot decode here."""
    reason = decoder_missing(backend)
    return pytest.mark.skipif(bool(reason), reason=reason)


def decoders(*backends: str) -> list:
    """`backends` as parametrize values, each skipped where it cannot decode here."""
    return [pytest.param(b, marks=needs_decoder(b)) for b in backends]


def cache_arrays(cache_dir: Path) -> dict[str, np.ndarray]:
    """Every array of a finished feature cache, its shards concatenated in clip order."""
    from sfa_cache.cache.format import layout
    from sfa_cache.cache.format.index import read_cache_index
    from sfa_cache.cache.format.read import read_shard

    shards = [read_shard(layout.shard_path(cache_dir, s.index)).arrays() for s in read_cache_index(cache_dir).shards]
    return {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}


def index_frames(num_frames: int, size: int = 32) -> np.ndarray:
    """Flat grey frames whose brightness encodes the frame index: 10 + 8 * t."""
    values = 10 + 8 * np.arange(num_frames)
    return np.broadcast_to(values[:, None, None, None], (num_frames, size, size, 3)).astype(np.uint8).copy()


def frame_ids(frames: np.ndarray) -> list[int]:
    """Inverse of `index_frames` on decoded frames [T, H, W, 3]."""
    return [int(round((f.mean() - 10) / 8)) for f in frames]


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real H.264 files: index-coded clips of 24 and 1 frames, a textured clip, and broken files."""
    d = tmp_path_factory.mktemp("videos")
    out = {"index24": d / "index24.mp4", "one": d / "one.mp4", "textured": d / "textured.mp4"}
    write_video(out["index24"], index_frames(24))
    write_video(out["one"], index_frames(1))
    rng = np.random.default_rng(0)
    write_video(out["textured"], rng.integers(0, 255, size=(12, 48, 64, 3), dtype=np.uint8))
    out["empty"] = d / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["garbage"] = d / "garbage.mp4"
    out["garbage"].write_bytes(rng.integers(0, 255, size=4096, dtype=np.uint8).tobytes())
    data = out["textured"].read_bytes()
    out["truncated"] = d / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])  # the moov atom is at the end: lost
    out["missing"] = d / "does-not-exist.mp4"
    return out


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset: 7 classes x (4 train + 2 val + 2 test) clips of 24 frames at 32 px."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, SyntheticConfig(train_per_class=4, val_per_class=2, test_per_class=2, num_frames=24, size=32,
                                         flash_len=4))
    return root


@pytest.fixture(scope="session")
def tiny_run(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Stage-1 run directory holding a randomly initialised tiny ViViT-FE (32 px)."""
    out = tmp_path_factory.mktemp("stage1")
    classes = infer_classes(synthetic / "train.csv")
    torch.manual_seed(1)
    model = ViViTFE(tiny_config(num_classes=len(classes)))
    save_model_weights(model, out)
    RunRecord(kind="stage1", model=model.cfg, classes=classes).save(out)
    return out


def tiny_config(
    num_classes: int = 5, frames: int = 4, adapter: str = "none", image_size: int = 32, depth: int = 2
) -> ViViTConfig:
    return ViViTConfig(
        num_classes=num_classes,
        spatial=SpatialConfig(backbone=TINY_BACKBONE, image_size=image_size, frame_chunk=3),
        adapter=AdapterConfig(adapter),
        temporal=TemporalConfig(num_frames=frames, depth=depth),
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip cleanly on machines without CUDA (CI never has one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
