"""Stage-2 feeds: the windowed epoch order, the draws, and resident / streamed / per-clip batches
that must be the same batches (cache/feeds/: epochs.py, resident.py, streaming.py, stage2.py)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from sfa_cache.cache.extraction.builder import write_features
from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.feeds.epochs import WindowedEpochSampler, train_draws, window_class_coverage
from sfa_cache.cache.feeds.placement import choose_placement
from sfa_cache.cache.feeds.resident import ResidentBatches, load_resident
from sfa_cache.cache.feeds.streaming import StreamingBatches
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.cache.format.write import ShardData
from sfa_cache.data.loaders import make_loader
from sfa_cache.errors import SfaError
from sfa_cache.video.sampling import uniform_indices

CPU = torch.device("cpu")


def _random_cache(root: Path, clips: int = 37, per_shard: int = 6, views: int = 2, frames: int = 12,
                  dim: int = 8) -> Path:
    """A float16 cache of `clips` random clips in shards of `per_shard`, a few of them failed (NaN)."""
    rng = np.random.default_rng(0)
    data = ShardData.empty(clips, views, frames, dim, "float16")
    data.valid[:] = True
    data.valid[[3, 10, 11, 30]] = False
    data.features[data.valid] = rng.standard_normal((int(data.valid.sum()), views, frames, dim)).astype("float16")
    data.labels[:] = rng.integers(0, 4, clips)
    data.clip_index[:] = np.arange(clips)
    data.frame_index[data.valid] = 0
    return write_features(root, "rand", data, classes=list("abcd"), clips_per_shard=per_shard)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> FeatureCache:
    return FeatureCache(_random_cache(tmp_path_factory.mktemp("feeds")))


def _epochs(loader, sampler, epochs: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [(x.clone(), y.clone()) for x, y, _ in loader]
    return out


def _assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == xb.dtype == torch.float32
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ya, yb)


@pytest.mark.parametrize("train", [True, False])
def test_resident_streamed_and_per_clip_batches_are_identical(cache: FeatureCache, train: bool) -> None:
    ds = CachedFeatureDataset(cache, 5, train=train, seed=3)

    def sampler() -> WindowedEpochSampler:
        return WindowedEpochSampler(ds.shard_of, window=2, shuffle=train, seed=3)

    s_clip, s_res, s_stream, s_workers = sampler(), sampler(), sampler(), sampler()
    per_clip = _epochs(make_loader(ds, s_clip, batch_size=4, num_workers=0, device=CPU), s_clip)
    store = load_resident(cache, ds.selection.views_needed(), device=CPU, progress=False)
    assert store.tokens.dtype == torch.float16 and store.tokens.shape[:2] == (len(ds), 2 if train else 1)
    resident = _epochs(ResidentBatches(store, s_res, ds.selection, batch_size=4, device=CPU), s_res)
    streamed = _epochs(StreamingBatches(ds, s_stream, batch_size=4, num_workers=0, device=CPU), s_stream)
    _assert_same_batches(per_clip, resident)
    _assert_same_batches(per_clip, streamed)
    if train:  # worker processes reading windows in parallel give them back in order
        two = _epochs(StreamingBatches(ds, s_workers, batch_size=4, num_workers=2, device=CPU), s_workers)
        _assert_same_batches(per_clip, two)
        epoch0, epoch1 = per_clip[: len(per_clip) // 2], per_clip[len(per_clip) // 2 :]
        assert not torch.equal(epoch0[0][0], epoch1[0][0])  # a new order and new draws each epoch
    # Every valid clip once per epoch, and never a failed (NaN) one.
    labels = torch.cat([y for _, y in per_clip[: len(per_clip) // 2]])
    assert len(labels) == len(ds) == 33
    assert all(torch.isfinite(x).all() for x, _ in per_clip)


def test_windowed_order_reads_a_window_of_shards_at_a_time(cache: FeatureCache) -> None:
    ds = CachedFeatureDataset(cache, 5, train=True)
    shard_of = ds.shard_of
    sampler = WindowedEpochSampler(shard_of, window=2, shuffle=True, seed=1)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order, window = sampler.global_order()
        assert sorted(order) == list(range(len(ds)))  # a permutation of the items
        for w in np.unique(window):
            assert len(np.unique(shard_of[order[window == w]])) <= 2  # one window = at most 2 shards
        # windows are contiguous runs of the order
        assert np.all(np.diff(window) >= 0)
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    full = WindowedEpochSampler(shard_of, window=0, shuffle=True, seed=1)
    first_half = full.global_order()[0][: len(ds) // 2]
    assert len(np.unique(shard_of[first_half])) > 2  # a full shuffle mixes every shard
    assert window_class_coverage(full, ds.labels) == 1.0
    by_class = WindowedEpochSampler(np.sort(ds.labels), window=1, shuffle=True)  # shards of one class each
    assert window_class_coverage(by_class, np.sort(ds.labels)) == 0.25


def test_ranks_share_the_one_order_evenly(cache: FeatureCache) -> None:
    ds = CachedFeatureDataset(cache, 5, train=True)
    ranks = [WindowedEpochSampler(ds.shard_of, window=2, shuffle=True, seed=4, rank=r, world_size=2) for r in (0, 1)]
    one = WindowedEpochSampler(ds.shard_of, window=2, shuffle=True, seed=4).indices()
    parts = [r.indices() for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 17  # 33 items padded to 34: the same steps on both ranks
    interleaved = np.empty(34, dtype=np.int64)
    interleaved[0::2], interleaved[1::2] = parts
    np.testing.assert_array_equal(interleaved[:33], one)


def test_draws_are_a_function_of_seed_epoch_and_clip() -> None:
    clips = np.arange(500)
    view, frames = train_draws(7, 2, clips, views=2, cached_frames=128, frames=32)
    again_view, again_frames = train_draws(7, 2, clips[::-1], views=2, cached_frames=128, frames=32)
    np.testing.assert_array_equal(view, again_view[::-1])  # a clip's draw does not depend on its neighbours
    np.testing.assert_array_equal(frames, again_frames[::-1])
    assert 0.4 < view.mean() < 0.6  # both views drawn
    assert np.all(np.diff(frames, axis=1) >= 0) and frames.min() >= 0 and frames.max() <= 127
    segment = np.arange(32) * 4  # one frame inside each of the 32 segments of 4 cached frames
    assert np.all((frames >= segment) & (frames < segment + 4))
    assert len({tuple(f) for f in frames}) > 450  # temporal jitter
    other_epoch = train_draws(7, 3, clips, views=2, cached_frames=128, frames=32)[1]
    other_seed = train_draws(8, 2, clips, views=2, cached_frames=128, frames=32)[1]
    assert (other_epoch != frames).any(axis=1).mean() > 0.95 and (other_seed != frames).any(axis=1).mean() > 0.95
    # fewer cached frames than asked: indices repeat, never out of range (like uniform_indices)
    short = train_draws(0, 0, clips, views=1, cached_frames=3, frames=8)[1]
    assert short.min() >= 0 and short.max() <= 2
    assert uniform_indices(3, 8, train=False).max() <= 2


def test_placement_follows_free_memory_and_forced_choices_fail_clearly() -> None:
    gib = 2**30
    cuda = torch.device("cuda", 0)
    assert choose_placement("auto", 2 * gib, cuda, step_bytes=gib, gpu_free=10 * gib, host_free=gib)[0] == "gpu"
    # does not fit beside the step on the GPU: host memory, then streaming
    placement = choose_placement("auto", 8 * gib, cuda, step_bytes=2 * gib, gpu_free=10 * gib, host_free=20 * gib)
    assert placement[0] == "ram"
    assert choose_placement("auto", 8 * gib, CPU, host_free=10 * gib)[0] == "stream"
    assert choose_placement("auto", 2 * gib, CPU, host_free=10 * gib)[0] == "ram"
    assert choose_placement("off", 1, CPU, host_free=10 * gib)[0] == "stream"
    with pytest.raises(SfaError, match="gpu needs a CUDA"):
        choose_placement("gpu", 1, CPU, host_free=gib)
    with pytest.raises(SfaError, match="do not fit in the 10.00 GiB free"):
        choose_placement("gpu", 9 * gib, cuda, step_bytes=gib, gpu_free=10 * gib)
    with pytest.raises(SfaError, match="exceed 60% of the 10.00 GiB"):
        choose_placement("ram", 8 * gib, CPU, host_free=10 * gib)
    with pytest.raises(SfaError, match="must be one of"):
        choose_placement("disk", 1, CPU)


def _child_reads(tokens: torch.Tensor, queue) -> None:
    queue.put((tokens.is_shared(), float(tokens.float().sum())))
    tokens[0, 0, 0, 0] = 42.0  # visible to the parent only if this is the parent's memory


def test_a_shared_copy_is_mapped_not_copied_by_a_spawned_process(cache: FeatureCache) -> None:
    store = load_resident(cache, (0, 1), device=CPU, shared=True, progress=False)
    before = float(store.tokens.float().sum())
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(store.tokens, queue))
    proc.start()
    shared, total = queue.get(timeout=120)
    proc.join(timeout=60)
    assert proc.exitcode == 0 and shared
    assert total == before
    assert float(store.tokens[0, 0, 0, 0]) == 42.0


@pytest.mark.gpu
def test_gpu_resident_batches_equal_host_ones(cache: FeatureCache) -> None:
    ds = CachedFeatureDataset(cache, 5, train=True, seed=3)
    gpu, host = torch.device("cuda"), WindowedEpochSampler(ds.shard_of, window=2, shuffle=True, seed=3)
    on_gpu = WindowedEpochSampler(ds.shard_of, window=2, shuffle=True, seed=3)
    store = load_resident(cache, (0, 1), device=CPU, progress=False)
    a = _epochs(ResidentBatches(store, host, ds.selection, batch_size=4, device=gpu), host)
    b = _epochs(ResidentBatches(store.to(gpu), on_gpu, ds.selection, batch_size=4, device=gpu), on_gpu)
    assert a[0][0].device.type == "cuda"
    _assert_same_batches([(x.cpu(), y.cpu()) for x, y in a], [(x.cpu(), y.cpu()) for x, y in b])


def test_one_device_under_two_names_is_one_device(cache: FeatureCache) -> None:
    """A bare 'cuda' is 'cuda:0' (the current device): a store there is not copied again."""
    from sfa_cache.runtime import same_device

    assert same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda"), torch.device("cuda:1"))
    assert same_device(CPU, torch.device("cpu")) and not same_device(CPU, torch.device("cuda"))
    store = load_resident(cache, (0,), device=CPU, progress=False)
    assert store.to(torch.device("cpu")) is store


@pytest.mark.gpu
def test_streamed_batches_cross_to_the_gpu_from_pinned_windows(cache: FeatureCache) -> None:
    """Streaming pins once: each window is allocated pinned and its batches are not pinned again."""
    from sfa_cache.cache.feeds.streaming import StreamingBatches

    ds = CachedFeatureDataset(cache, 5, train=True, seed=3)
    sampler = WindowedEpochSampler(ds.shard_of, window=2, shuffle=True, seed=3)
    feed = StreamingBatches(ds, sampler, batch_size=4, num_workers=0, device=torch.device("cuda"))
    assert all(x.is_pinned() for x, _ in feed.windows())
    store = load_resident(cache, (0, 1), device=torch.device("cuda:0"), progress=False)
    assert store.to(torch.device("cuda")) is store
