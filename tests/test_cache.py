"""The cache library on real Zarr stores: writer/reader, batching, the decode pool, transforms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from sfa_cache.cache.extraction.builder import write_features
from sfa_cache.cache.extraction.frame_batches import FrameBatcher
from sfa_cache.cache.format.codecs import COMPRESSORS, codec_named
from sfa_cache.cache.format.read import FeatureCache, read_shard
from sfa_cache.cache.format.write import ShardData, write_shard
from sfa_cache.data.decode_pool import DecodePool, JobFailure
from sfa_cache.video.transforms import eval_crops, eval_transform


def _shard(n: int, v: int = 2, f: int = 3, d: int = 4, seed: int = 0, dtype: str = "float16") -> ShardData:
    rng = np.random.default_rng(seed)
    data = ShardData.empty(n, v, f, d, dtype)
    data.valid[:] = rng.random(n) > 0.3
    data.features[data.valid] = rng.standard_normal((int(data.valid.sum()), v, f, d)).astype(dtype)
    data.labels[:] = rng.integers(0, 5, n)
    data.clip_index[:] = np.arange(n) + 100 * seed
    data.frame_index[data.valid] = rng.integers(0, 50, (int(data.valid.sum()), v, f))
    return data


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_shard_round_trip_keeps_values_nan_and_checksum(tmp_path: Path, compressor: str) -> None:
    data = _shard(7)
    write_shard(tmp_path / "s.zarr", data, compressor)
    back = read_shard(tmp_path / "s.zarr")
    for name, a in data.arrays().items():
        b = back.arrays()[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # NaN == NaN for assert_array_equal
    assert np.isnan(back.features[~back.valid]).all() and not np.isnan(back.features[back.valid]).any()
    assert back.checksum() == data.checksum()
    back.features[0, 0, 0, 0] += 1
    assert back.checksum() != data.checksum()


def test_empty_shard_features_are_nan_never_zero() -> None:
    data = ShardData.empty(3, 1, 2, 4, "float32")
    assert np.isnan(data.features).all() and (data.frame_index == -1).all() and not data.valid.any()


def _fake_cache(root: Path, sizes: list[int]) -> tuple[Path, list[ShardData]]:
    """A finished cache written through the real builder, writer and layout (no model needed):
    shards of `sizes[0]` clips (the last one shorter)."""
    datas = [_shard(n, seed=i) for i, n in enumerate(sizes)]
    whole = ShardData(**{k: np.concatenate([d.arrays()[k] for d in datas]) for k in datas[0].arrays()})
    return write_features(root, "fake", whole, classes=list("abcde"), clips_per_shard=sizes[0]), datas


def test_reader_maps_global_clips_to_shards(tmp_path: Path) -> None:
    root, datas = _fake_cache(tmp_path, [4, 4, 2])
    cache = FeatureCache(root)
    assert len(cache) == 10 and cache.views == 2 and cache.frames == 3 and cache.dim == 4
    assert [cache.locate(i) for i in (0, 3, 4, 9)] == [(0, 0), (0, 3), (1, 0), (2, 1)]
    flat = [(d, r) for d in datas for r in range(len(d.labels))]
    for i, (d, r) in enumerate(flat):
        np.testing.assert_array_equal(cache.features(i), d.features[r])
        np.testing.assert_array_equal(cache.frame_index(i), d.frame_index[r])
    np.testing.assert_array_equal(cache.labels, np.concatenate([d.labels for d in datas]))
    np.testing.assert_array_equal(cache.valid, np.concatenate([d.valid for d in datas]))
    with pytest.raises(IndexError):
        cache.features(10)


class _CacheDataset(Dataset):
    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.cache.features(i).astype(np.float32)), os.getpid()


@pytest.mark.parametrize("context", ["forkserver", "fork"])
def test_reader_works_inside_dataloader_workers(tmp_path: Path, context: str) -> None:
    root, _ = _fake_cache(tmp_path, [4, 3])
    cache = FeatureCache(root)
    expected = torch.stack([torch.from_numpy(cache.features(i).astype(np.float32)) for i in range(len(cache))])
    # The parent has opened stores above: fork must not reuse those handles in the workers.
    loader = DataLoader(_CacheDataset(cache), batch_size=2, num_workers=2, multiprocessing_context=context)
    got, pids = zip(*[(x, p) for x, p in loader])
    torch.testing.assert_close(torch.cat(got), expected, equal_nan=True)
    assert os.getpid() not in set(torch.cat(pids).tolist())


def test_frame_batcher_runs_fixed_batches_and_routes_tokens_back() -> None:
    sizes = []
    weight = torch.randn(3 * 2 * 2, 5)

    def encode(x: torch.Tensor) -> torch.Tensor:  # [N, 3, 2, 2] -> [N, 5]
        sizes.append(x.shape[0])
        return x.flatten(1) @ weight

    out: dict[int, torch.Tensor] = {}
    clips = {k: torch.randn(n, 3, 2, 2) for k, n in enumerate([5, 7, 1, 12, 3])}
    for k, n in enumerate([5, 7, 1, 12, 3]):
        out[k] = torch.full((n, 5), float("nan"))

    def sink(key: int, start: int, tokens: torch.Tensor) -> None:
        out[key][start : start + tokens.shape[0]] = tokens

    batcher = FrameBatcher(encode, 8, sink)
    for k, frames in clips.items():
        batcher.add(k, frames)
    batcher.flush()
    assert sizes == [8, 8, 8, 4] and batcher.frames_done == 28
    for k, frames in clips.items():
        torch.testing.assert_close(out[k], encode(frames), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_frame_batcher_overlapped_on_a_gpu_routes_the_same_tokens() -> None:
    """Pinned staging, non-blocking copies both ways, delivery one batch late: the same tokens."""
    weight = torch.randn(3 * 2 * 2, 5, device="cuda")
    clips = {k: torch.randint(0, 255, (n, 3, 2, 2), dtype=torch.uint8) for k, n in enumerate([5, 7, 1, 12, 3])}
    out = {k: torch.full((len(f), 5), float("nan")) for k, f in clips.items()}

    def sink(key: int, start: int, tokens: torch.Tensor) -> None:
        out[key][start : start + tokens.shape[0]] = tokens

    def encode(x: torch.Tensor) -> torch.Tensor:
        return x.to("cuda", non_blocking=True).float().flatten(1) @ weight

    batcher = FrameBatcher(encode, 8, sink, torch.device("cuda"))
    for k, frames in clips.items():
        batcher.add(k, frames)
    batcher.flush()
    for k, frames in clips.items():
        torch.testing.assert_close(out[k], encode(frames).cpu(), rtol=1e-5, atol=1e-5)


def test_decode_pool_keeps_order_and_reports_exceptions() -> None:
    pool = DecodePool(int, workers=2, timeout=30)
    results = [r for _, r in pool.imap(["1", "x", "3", "4", "5"])]
    assert results[0] == 1 and results[2:] == [3, 4, 5]
    assert isinstance(results[1], JobFailure) and "ValueError" in results[1].reason


def test_decode_pool_kills_a_hung_job_and_carries_on() -> None:
    pool = DecodePool(time.sleep, workers=2, timeout=1.0)
    t0 = time.monotonic()
    results = [r for _, r in pool.imap([0, 600, 0, 0])]
    assert results[0] is None and results[2:] == [None, None]
    assert isinstance(results[1], JobFailure) and "timed out" in results[1].reason
    assert pool.timeouts == 1
    assert time.monotonic() - t0 < 60  # the 600 s job was killed, not waited for


def test_decode_pool_survives_a_worker_that_dies() -> None:
    pool = DecodePool(os._exit, workers=1, timeout=30, max_jobs_per_worker=1)
    results = [r for _, r in pool.imap([3, 4])]
    assert [r.reason for r in results] == ["decoder process died (exit code 3)", "decoder process died (exit code 4)"]
    assert pool.crashes == 2


def test_decode_pool_does_not_charge_worker_start_up_to_a_job() -> None:
    # A fresh worker takes longer than 0.3 s to import torch; that must not time out its first job.
    pool = DecodePool(abs, workers=1, timeout=0.3, max_jobs_per_worker=2)
    assert [r for _, r in pool.imap([-1, -2, -3, -4, -5])] == [1, 2, 3, 4, 5]
    assert pool.timeouts == 0


def test_eval_crops() -> None:
    clip = np.random.default_rng(0).integers(0, 255, (3, 40, 60, 3), dtype=np.uint8)
    one = eval_crops(clip, 32, (0.5,) * 3, (0.25,) * 3, crops=1)
    three = eval_crops(clip, 32, (0.5,) * 3, (0.25,) * 3, crops=3)
    assert one.shape == (1, 3, 3, 32, 32) and three.shape == (3, 3, 3, 32, 32)
    torch.testing.assert_close(one[0], eval_transform(clip, 32, (0.5,) * 3, (0.25,) * 3))
    torch.testing.assert_close(three[1], one[0])
    assert not torch.equal(three[0], three[2])  # left and right ends of the long side differ
    tall = eval_crops(clip.transpose(0, 2, 1, 3), 32, (0.5,) * 3, (0.25,) * 3, crops=3)
    assert not torch.equal(tall[0], tall[2])


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_decode_pool_recycles_workers_every_n_jobs() -> None:
    pool = DecodePool(_pid_after, workers=1, timeout=30, max_jobs_per_worker=2)
    pids = [r for _, r in pool.imap([0.0] * 6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_decode_pool_replaces_a_worker_that_dies_while_idle(caplog: pytest.LogCaptureFixture) -> None:
    # max_ahead=1: one job in flight, so while the consumer holds back the second worker is idle.
    pool = DecodePool(_pid_after, workers=2, timeout=30, max_ahead=1)
    run = pool.imap([0.3] * 6)
    first = next(run)[1]
    deadline = time.monotonic() + 60
    while not all(w.ready for w in run.workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    idle = [w for w in run.workers if w.seq is None]
    assert len(idle) >= 1
    os.kill(idle[0].proc.pid, 9)
    time.sleep(0.3)
    rest = [r for _, r in run]
    assert not any(isinstance(r, JobFailure) for r in rest) and len(rest) == 5 and isinstance(first, int)
    assert idle[0].proc.pid not in rest and pool.crashes == 0
    assert "died while idle (exit code -9)" in caplog.text


def test_fingerprint_covers_weights_architecture_and_preprocessing() -> None:
    import dataclasses

    from sfa_cache.models.config import SpatialConfig
    from sfa_cache.models.fingerprint import spatial_fingerprint

    state = {"b": torch.ones(3), "a": torch.arange(4, dtype=torch.float16)}
    cfg = SpatialConfig(backbone="vit_tiny_patch16_224", image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    fp = spatial_fingerprint(state, cfg)
    assert fp == spatial_fingerprint(dict(reversed(list(state.items()))), cfg)  # key order is irrelevant
    assert fp == spatial_fingerprint(state, dataclasses.replace(cfg, backbone="vit_tiny_patch16_224.augreg_in21k"))
    assert fp == spatial_fingerprint(state, dataclasses.replace(cfg, frame_chunk=7))  # runtime only
    others = [
        {**state, "b": torch.tensor([1.0, 1.0, 1.0 + 1e-6])},
        {**state, "a": state["a"].float()},  # same values, another dtype
    ]
    for other in others:
        assert spatial_fingerprint(other, cfg) != fp
    for change in (dict(backbone="vit_tiny_patch16_384"), dict(image_size=64), dict(mean=(0.4, 0.5, 0.5))):
        assert spatial_fingerprint(state, dataclasses.replace(cfg, **change)) != fp, change


def test_rank_device_under_torchrun() -> None:
    from sfa_cache.distributed import DistInfo, rank_device
    from sfa_cache.errors import SfaError

    two = DistInfo(rank=1, world_size=2, local_rank=1)
    with pytest.raises(SfaError, match="every rank on the same GPU"):
        rank_device("cuda:0", two)
    if not torch.cuda.is_available():
        assert rank_device("auto", two) == torch.device("cpu")


def test_reader_never_reuses_handles_from_another_process(tmp_path: Path) -> None:
    import pickle

    root, datas = _fake_cache(tmp_path, [4])
    cache = FeatureCache(root)
    cache.features(0)
    inherited = cache._arrays[(0, "features")]
    cache._pid = -1  # as if this object had been inherited through fork
    np.testing.assert_array_equal(cache.features(1), datas[0].features[1])
    assert cache._arrays[(0, "features")] is not inherited and cache._pid == os.getpid()
    assert pickle.loads(pickle.dumps(cache))._arrays == {}  # handles never travel to workers


@pytest.mark.parametrize("how", ["module", "script"])
def test_decode_workers_do_not_rerun_the_main_script(tmp_path: Path, how: str) -> None:
    """A forkserver child imports the parent's main module unless hidden: for the sfa-cache
    console script that meant the whole CLI in every decode worker."""
    marks = tmp_path / "imports.txt"
    (tmp_path / "mainmod.py").write_text(
        "import os\n"
        f"open({str(marks)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "from sfa_cache.data.decode_pool import DecodePool\n"
        "if __name__ == '__main__':\n"
        "    print([r for _, r in DecodePool(abs, workers=2, timeout=60).imap([-1, -2, -3])])\n")
    cmd = [sys.executable, "-m", "mainmod"] if how == "module" else [sys.executable, str(tmp_path / "mainmod.py")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert out.returncode == 0 and "[1, 2, 3]" in out.stdout, out.stderr[-2000:]
    assert len(marks.read_text().split()) == 1  # the parent only


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_whole_shard_reader_equals_zarr_and_checks_every_checksum(tmp_path: Path, compressor: str, dtype: str) -> None:
    """The one-pass shard readers give exactly Zarr's values (failed clips, stored by Zarr as no
    chunk at all, as NaN), the whole array or a batch's view and frames per clip, fall back to
    None for layouts they do not know, and refuse corrupt chunks and a corrupt index as Zarr does."""
    import zarr

    from sfa_cache.cache.format.fast_read import read_clip_frames, read_whole_features

    data = _shard(9, v=2, f=3, d=4, dtype=dtype)
    write_shard(tmp_path / "s.zarr", data, compressor)
    features = tmp_path / "s.zarr" / "features"
    whole = read_whole_features(features)
    rows, views = np.array([8, 0, 3, 5, 0]), np.array([1, 0, 1, 0, 1])
    frames = np.array([[0, 2], [1, 1], [2, 0], [0, 1], [2, 2]])
    taken = read_clip_frames(features, rows, views, frames)
    if compressor != "blosc":  # only the default layout has the fast path; FeatureCache then uses Zarr
        assert whole is None and taken is None
        return
    expected = zarr.open_array(str(features), mode="r")[...]
    assert whole is not None and whole.dtype == expected.dtype and whole.shape == (9, 2, 3, 4)
    np.testing.assert_array_equal(whole, expected)
    assert np.isnan(whole[~data.valid]).all() and not np.isnan(whole[data.valid]).any()
    assert taken is not None and taken.dtype == expected.dtype and taken.shape == (5, 2, 4)
    np.testing.assert_array_equal(taken, expected[rows[:, None], views[:, None], frames])
    assert np.isnan(taken[~data.valid[rows]]).all() and not np.isnan(taken[data.valid[rows]]).any()

    shard_file = features / "c" / "0" / "0" / "0" / "0"
    raw = shard_file.read_bytes()
    for where, message in ((10, "chunk 0's checksum"), (len(raw) - 20, "index's checksum")):
        broken = bytearray(raw)
        broken[where] ^= 0xFF
        shard_file.write_bytes(bytes(broken))
        with pytest.raises(ValueError, match=message):
            read_whole_features(features)
        with pytest.raises(ValueError, match=message):
            read_clip_frames(features, np.arange(9), np.zeros(9, dtype=int), np.zeros((9, 1), dtype=int))
    shard_file.write_bytes(raw)


def test_shard_features_read_through_either_path_agree(tmp_path: Path) -> None:
    """FeatureCache.shard_features (one-pass reader) equals the clip-by-clip Zarr reads, every view
    and any subset of views."""
    cache_dir, datas = _fake_cache(tmp_path, [5, 5, 3])
    cache = FeatureCache(cache_dir)
    for s, data in enumerate(datas):
        np.testing.assert_array_equal(cache.shard_features(s), data.features)
        np.testing.assert_array_equal(cache.shard_features(s, (1,)), data.features[:, [1]])
        per_clip = np.stack([cache.features(cache.shards[s].start + i) for i in range(len(data.valid))])
        np.testing.assert_array_equal(cache.shard_features(s), per_clip)


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_shard_clip_frames_equal_a_gather_from_clip_reads(tmp_path: Path, compressor: str) -> None:
    """What streaming takes from a shard (one view, some frames per clip) equals the same gather
    from clip-by-clip Zarr reads, on the one-pass path (blosc) and on the Zarr fallback."""
    data = _shard(10, v=3, f=5, d=4)
    cache = FeatureCache(write_features(tmp_path, "fake", data, classes=list("abcde"), clips_per_shard=6,
                                        compressor=compressor))
    rng = np.random.default_rng(1)
    for s, shard in enumerate(cache.shards):
        rows = rng.permutation(shard.stop - shard.start)
        views, frames = rng.integers(0, 3, len(rows)), rng.integers(0, 5, (len(rows), 2))
        taken = cache.shard_clip_frames(s, rows, views, frames)
        clips = np.stack([cache.features(shard.start + r) for r in rows])  # [n, V, F, D]
        np.testing.assert_array_equal(taken, clips[np.arange(len(rows))[:, None], views[:, None], frames])



@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_each_codec_is_stored_under_the_names_it_declares(tmp_path: Path, compressor: str) -> None:
    """A codec table entry's `stored_as` is what zarr.json records for its chain: the one-pass
    reader recognises a compressor by it."""
    write_shard(tmp_path / "s.zarr", _shard(3), compressor)
    meta = json.loads((tmp_path / "s.zarr" / "features" / "zarr.json").read_text())
    names = [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]]
    assert names == ["bytes", *codec_named(compressor).stored_as, "crc32c"]
