"""`sfa-cache extract` end to end: real videos, a real tiny ViT, real Zarr shards on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_BACKBONE, cache_arrays
from safetensors.torch import load_file, save_file

from sfa_cache.cache.extraction.decode_jobs import ClipJob, decode_float_views, decode_views
from sfa_cache.cache.format import layout
from sfa_cache.cache.format.index import cache_index_from_json, cache_key, read_cache_index
from sfa_cache.cache.format.read import FeatureCache, read_shard
from sfa_cache.cache.format.verify import cache_info, verify_cache
from sfa_cache.cache.format.write import write_shard
from sfa_cache.cli.main import cli
from sfa_cache.data.manifest import ManifestEntry, infer_classes, read_manifest
from sfa_cache.errors import SfaError
from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.run.weights import load_spatial, read_spatial_fingerprint
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.reader import open_video
from sfa_cache.video.sampling import uniform_indices
from sfa_cache.video.transforms import AugmentConfig, eval_crops, eval_transform, normalise_uint8, train_transform

# Measured tolerances of the uint8 transport against float frames: see the test that uses them.
REL_L2_TOLERANCE = 2.5e-2  # per frame ||diff|| / ||ref||, worst frame (measured 1.30e-2)
REL_L2_MEDIAN_TOLERANCE = 3.5e-3  # the same, median frame (measured 1.70e-3)
SCALED_TOLERANCE = 3e-2  # max |diff| / the frame's max |value| (measured 1.57e-2)


def _cfg(run: Path, manifest: Path, root: Path, **over) -> ExtractConfig:
    values = dict(model=str(run), manifest=str(manifest), cache_root=str(root), frames=6, clips_per_shard=8,
                  batch_frames=20, num_workers=1, progress=False)
    values.update(over)
    return ExtractConfig(**values)


def test_cached_features_equal_the_spatial_model_on_the_same_frames(
    tiny_run: Path, synthetic: Path, tmp_path: Path
) -> None:
    train = run_extract(_cfg(tiny_run, synthetic / "train.csv", tmp_path, views=2, seed=3))
    val = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", eval_crops=3, num_workers=0))
    spatial, scfg = load_spatial(tiny_run)
    spatial.eval()
    aug = AugmentConfig()
    for result, mode in ((train, "train"), (val, "eval")):
        cache = FeatureCache(result.cache_dir)
        manifest = read_manifest(synthetic / f"{'train' if mode == 'train' else 'val'}.csv", cache.classes)
        assert len(cache) == len(manifest) and cache.valid.all()
        for clip in (0, 5, len(cache) - 1):  # the first, a middle and the last shard
            entry = manifest.entries[clip]
            reader = open_video(entry.path)
            if mode == "train":  # each view: its own generator from (seed, manifest row, view)
                views, indices = [], []
                for v in range(2):
                    rng = np.random.default_rng([3, entry.row, v])
                    idx = uniform_indices(reader.num_frames, 6, train=True, rng=rng)
                    views.append(train_transform(reader.get_frames(idx), 32, scfg.mean, scfg.std, rng, aug,
                                                 normalise=False))
                    indices.append(idx)
                frames = torch.stack(views)
            else:
                idx = uniform_indices(reader.num_frames, 6, train=False)
                frames = eval_crops(reader.get_frames(idx), 32, scfg.mean, scfg.std, 3, normalise=False)
                indices = [idx] * 3
            # Extraction ships the frames as uint8 and normalises them on the device, so the reference
            # is the same frames rounded to uint8 too. Against float frames never rounded, the features
            # differ by more than float16 storage: see test_uint8_transport_agrees_with_float_frames.
            frames = normalise_uint8(frames, scfg.mean, scfg.std)
            with torch.no_grad():
                expected = spatial(frames)  # [views, frames, D]
            got = torch.from_numpy(cache.features(clip).astype(np.float32))
            assert got.shape == expected.shape == (2 if mode == "train" else 3, 6, 192)
            torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-3)  # float16 storage
            np.testing.assert_array_equal(cache.frame_index(clip), np.stack(indices))
            assert cache.labels[clip] == entry.label and cache.clip_index[clip] == entry.row
    train_views = FeatureCache(train.cache_dir).features(0)
    assert not np.allclose(train_views[0], train_views[1])  # two different augmentations


# --- uint8 transport: workers ship quantised frames, `encode` normalises them on the device ------


def _clip_views(entry: ManifestEntry, mode: str, mean: tuple[float, ...], std: tuple[float, ...], *,
                normalise: bool) -> tuple[torch.Tensor, np.ndarray]:
    """A cached clip's views rebuilt from its video, as in the test above: train (2 views, seed 3)
    or eval (3 crops), 6 frames at 32 px -> (views [V, 6, 3, 32, 32], frame_index [V, 6])."""
    reader = open_video(entry.path)
    if mode == "train":
        views, indices = [], []
        for v in range(2):
            rng = np.random.default_rng([3, entry.row, v])
            idx = uniform_indices(reader.num_frames, 6, train=True, rng=rng)
            views.append(train_transform(reader.get_frames(idx), 32, mean, std, rng, AugmentConfig(),
                                         normalise=normalise))
            indices.append(idx)
        return torch.stack(views), np.stack(indices)
    idx = uniform_indices(reader.num_frames, 6, train=False)
    return eval_crops(reader.get_frames(idx), 32, mean, std, 3, normalise=normalise), np.stack([idx] * 3)


def _one_thread(make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`make(...)` with one torch thread, as a decode worker runs (a reduction such as colour
    jitter's mean grey splits its work by thread count, and the exact test needs the same bits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uint8_caches(tiny_run: Path, synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A train (2 views) and an eval (3 crops) cache, decoded by a worker process (uint8 through
    the pool). Every frame batch is exactly one clip (batch_frames = views x frames), so a
    reference can run the backbone on the same batches: same matrix shapes, same bits."""
    root = tmp_path_factory.mktemp("uint8-caches")
    train = run_extract(_cfg(tiny_run, synthetic / "train.csv", root, views=2, seed=3, batch_frames=12))
    val = run_extract(_cfg(tiny_run, synthetic / "val.csv", root, mode="eval", eval_crops=3, batch_frames=18))
    return {"train": train.cache_dir, "eval": val.cache_dir}


def test_decode_workers_ship_uint8_a_quarter_of_the_float_bytes(synthetic: Path) -> None:
    spec = ClipSpec(frames=6, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), train=True, views=2)
    entry = read_manifest(synthetic / "train.csv", infer_classes(synthetic / "train.csv")).entries[4]
    job = ClipJob(entry.row, entry.path, spec, seed=3)
    frames, frame_index = decode_views(job)
    old, old_index = decode_float_views(job)  # the transport before: normalised float32
    assert frames.dtype == torch.uint8 and frames.shape == old.shape == (2, 6, 3, 32, 32)
    assert old.dtype == torch.float32 and frames.nbytes * 4 == old.nbytes
    np.testing.assert_array_equal(frame_index, old_index)
    assert (normalise_uint8(frames, spec.mean, spec.std) - old).abs().max() <= 0.5 / 255 / 0.5 + 1e-6


def test_uint8_transforms_are_the_float_ones_quantised() -> None:
    """`normalise=False` stops before normalising and rounds to uint8; `normalise_uint8` finishes
    the job within half a grey level, and bit for bit where quantising loses nothing."""
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(2, 40, 56, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    s = torch.tensor(std).view(3, 1, 1)
    for seed in range(4):
        for normalised, quantised in (
            (train_transform(clip, 32, mean, std, np.random.default_rng(seed)),
             train_transform(clip, 32, mean, std, np.random.default_rng(seed), normalise=False)),
            (eval_crops(clip, 32, mean, std, 3), eval_crops(clip, 32, mean, std, 3, normalise=False)),
        ):
            assert quantised.dtype == torch.uint8 and normalised.dtype == torch.float32
            assert quantised.shape == normalised.shape
            error = (normalise_uint8(quantised, mean, std) - normalised).abs() * s  # in [0, 1] pixel units
            assert error.max() <= 0.5 / 255 + 1e-6
    # No resize (a 256-px short side is already 224 * 256/224): the crop's pixels come back exactly.
    frames = rng.integers(0, 256, size=(2, 256, 300, 3), dtype=np.uint8)
    quantised = eval_transform(frames, 224, mean, std, normalise=False)
    assert torch.equal(quantised, torch.from_numpy(frames).permute(0, 3, 1, 2)[..., 16:240, 38:262])
    assert torch.equal(normalise_uint8(quantised, mean, std), eval_transform(frames, 224, mean, std))
    with pytest.raises(TypeError, match="uint8"):
        normalise_uint8(quantised.float(), mean, std)


def test_uint8_transport_equals_the_model_on_quantised_frames_normalised_on_the_cpu(
    uint8_caches: dict[str, Path], tiny_run: Path, synthetic: Path
) -> None:
    """Exact, every clip of both caches: the workers' uint8 frames, normalised where the model
    runs (`ShardExtractor.encode`), give the very float16 values of the backbone run here on the
    same clips quantised to uint8 and normalised on the CPU with the float path's operations in
    its order: (q / 255 - mean) / std."""
    spatial, scfg = load_spatial(tiny_run)
    backbone = spatial.backbone.eval()
    mean, std = tuple(scfg.mean), tuple(scfg.std)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for mode, cache_dir in uint8_caches.items():
        cache = FeatureCache(cache_dir)
        manifest = read_manifest(synthetic / ("train.csv" if mode == "train" else "val.csv"), cache.classes)
        assert len(cache) == len(manifest) and cache.valid.all()
        for clip, entry in enumerate(manifest.entries):
            quantised, indices = _one_thread(_clip_views, entry, mode, mean, std, normalise=False)
            assert quantised.dtype == torch.uint8
            x = (quantised.float() / 255 - m) / s
            with torch.inference_mode():  # one call: the extractor's batch for this clip
                expected = backbone(x.flatten(0, 1)).reshape(cache.index.views, 6, cache.dim)
            np.testing.assert_array_equal(cache.features(clip), expected.numpy().astype(np.float16),
                                          err_msg=f"{mode} clip {clip}")
            np.testing.assert_array_equal(cache.frame_index(clip), indices)


def test_uint8_transport_agrees_with_float_frames(
    uint8_caches: dict[str, Path], tiny_run: Path, synthetic: Path
) -> None:
    """Against the float path extraction took before (normalised float32 frames, never rounded to
    uint8), with the model in float32 as `--amp none` runs it. Rounding moves each input value by
    at most half a grey level (0.5 / 255 / std); the features move by more than float16 storage.

    Measured on these caches (the tiny random ViT at 32 px, mean = std = 0.5, unit-RMS features;
    28 train clips x 2 views and 14 eval clips x 3 crops, 6 frames each):

    - per frame ||diff|| / ||float features||: median 1.70e-3, max 1.30e-2; float16 storage
      alone gives 2.5e-4 at most, so the median is about 7x float16 rounding: not within it;
    - max |diff| over the frame's max |value|: 1.57e-2 (float16 storage alone: 4.1e-4).

    For scale, measured apart on the same model: bf16 autocast (`--amp auto` on CUDA) moves the
    features by a median 7.0e-3 per frame, about 4x uint8 rounding. Tolerances: the measured
    values x ~2 (2.5e-2, 3.5e-3, 3e-2).
    """
    spatial, scfg = load_spatial(tiny_run)
    backbone = spatial.backbone.eval()
    mean, std = tuple(scfg.mean), tuple(scfg.std)
    rel_l2, scaled, fp16_alone = [], [], []
    for mode, cache_dir in uint8_caches.items():
        cache = FeatureCache(cache_dir)
        manifest = read_manifest(synthetic / ("train.csv" if mode == "train" else "val.csv"), cache.classes)
        for clip, entry in enumerate(manifest.entries):
            frames, _ = _clip_views(entry, mode, mean, std, normalise=True)
            with torch.inference_mode():
                expected = backbone(frames.flatten(0, 1)).reshape(cache.index.views, 6, cache.dim)
            got = torch.from_numpy(cache.features(clip).astype(np.float32))
            diff = got - expected
            rel_l2.append(diff.norm(dim=-1) / expected.norm(dim=-1))
            scaled.append(diff.abs().amax(dim=-1) / expected.abs().amax(dim=-1))
            rounded = torch.from_numpy(expected.numpy().astype(np.float16).astype(np.float32))
            fp16_alone.append((rounded - expected).norm(dim=-1) / expected.norm(dim=-1))
    rel = torch.cat([r.flatten() for r in rel_l2])  # one value per frame of every view of every clip
    worst = torch.cat([x.flatten() for x in scaled])
    storage = torch.cat([f.flatten() for f in fp16_alone])
    print(f"\nuint8 vs float frames, per frame ||diff|| / ||ref||: median {rel.median():.2e} max {rel.max():.2e}; "
          f"max |diff| / frame max {worst.max():.2e}; float16 storage alone max {storage.max():.2e}")
    assert rel.max() <= REL_L2_TOLERANCE and rel.median() <= REL_L2_MEDIAN_TOLERANCE
    assert worst.max() <= SCALED_TOLERANCE


def test_cache_records_fingerprint_settings_and_versions(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    result = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval"))
    index = json.loads((result.cache_dir / "cache.json").read_text())
    assert index["fingerprint"] == read_spatial_fingerprint(tiny_run)
    assert index["spatial"]["backbone"] == TINY_BACKBONE and index["spatial"]["image_size"] == 32
    assert index["frames"] == 6 and index["views"] == 1 and index["dim"] == 192 and index["dtype"] == "float16"
    assert index["extraction"]["views"] == {"mode": "eval", "count": 1, "sampling": "uniform-segment", "crops": 1}
    no_flip = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, views=2, flip_prob=0.0, num_workers=0))
    augment = json.loads((no_flip.cache_dir / "cache.json").read_text())["extraction"]["views"]["augment"]
    assert augment["flip_prob"] == 0.0 and augment["color_jitter_prob"] == 0.8
    assert index["classes"] == infer_classes(synthetic / "train.csv")
    assert index["versions"]["decord"] and index["versions"]["torch"] and index["extraction"]["decoder"] == "decord"
    assert index["num_clips"] == 14 and [s["start"] for s in index["shards"]] == [0, 8]
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("val-eval") and len(list(tmp_path.iterdir())) == 2
    assert verify_cache(result.cache_dir) == []
    info = cache_info(result.cache_dir)
    assert (
        info["clips"] == 14 and info["bytes"] > 14 * 6 * 192 * 2 * 0.5 and info["fingerprint"] == index["fingerprint"]
    )
    # The frame transport is a setting of the cache: part of the key, so a cache made before the
    # uint8 transport (an index without the field reads as float32) is never reused as a uint8 one.
    typed = read_cache_index(result.cache_dir)
    assert index["extraction"]["transport"] == "uint8" == typed.extraction.transport
    older = dataclasses.replace(typed.extraction, transport="float32")
    assert cache_key(typed.fingerprint, typed.extraction, typed.manifest.digest) == typed.key
    assert cache_key(typed.fingerprint, older, typed.manifest.digest) != typed.key
    del index["extraction"]["transport"]
    assert cache_index_from_json(index, where="old cache.json").extraction.transport == "float32"


def test_same_command_reuses_and_other_settings_do_not(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    first = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=0))
    stamp = os.stat(layout.shard_path(first.cache_dir, 0) / "features" / "c" / "0" / "0" / "0" / "0").st_mtime_ns
    again = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=2, batch_frames=7))
    assert again.reused and again.cache_dir == first.cache_dir and again.shards_extracted == 0
    assert (
        os.stat(layout.shard_path(first.cache_dir, 0) / "features" / "c" / "0" / "0" / "0" / "0").st_mtime_ns == stamp
    )
    other = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", frames=4, num_workers=0))
    assert not other.reused and other.cache_dir != first.cache_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.cache_dir.name, other.cache_dir.name])


def test_broken_short_and_missing_videos_are_recorded_never_zeros(tiny_run: Path, videos, tmp_path: Path) -> None:
    names = ["index24", "garbage", "one", "empty", "textured", "truncated", "missing"]
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("path,label\n" + "".join(f"{videos[n]},move_left\n" for n in names))
    result = run_extract(_cfg(tiny_run, manifest, tmp_path / "caches", frames=8, clips_per_shard=3, num_workers=2))
    assert (result.clips, result.valid, result.failed) == (7, 3, 4)
    failures = [json.loads(line) for line in (result.cache_dir / "failures.jsonl").read_text().splitlines()]
    assert [f["row"] for f in failures] == [1, 3, 5, 6]
    assert (
        all(f["reason"] for f in failures) and "empty" in failures[1]["reason"] and "not found" in failures[3]["reason"]
    )
    arrays = cache_arrays(result.cache_dir)
    np.testing.assert_array_equal(arrays["valid"], [True, False, True, False, True, False, False])
    assert np.isnan(arrays["features"][~arrays["valid"]]).all()
    assert not np.isnan(arrays["features"][arrays["valid"]]).any()
    assert (arrays["frame_index"][2] == 0).all()  # a 1-frame video: the index repeats
    assert len(np.unique(arrays["frame_index"][0, 0])) == 8
    assert verify_cache(result.cache_dir) == []
    # --strict: same cache (reused), but a non-zero exit naming the failures.
    r = CliRunner().invoke(
        cli,
        [
            "extract", "--model", str(tiny_run), "--manifest", str(manifest), "--cache-root", str(tmp_path / "caches"),
            "--frames", "8", "--clips-per-shard", "3", "--strict", "--no-progress",
        ],
    )
    assert r.exit_code == 1 and "4 clip(s) failed to decode (--strict)" in r.output


def test_all_clips_failing_stops_the_run(tiny_run: Path, videos, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text("path,label\n" + f"{videos['garbage']},move_left\n" * 20)
    with pytest.raises(SfaError, match="the first 16 clips all failed"):
        run_extract(_cfg(tiny_run, manifest, tmp_path / "caches", num_workers=0))


def _cli_extract(run: Path, manifest: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sfa_cache.cli", "extract", "--model", str(run), "--manifest", str(manifest),
            "--cache-root", str(root), "--frames", "6", "--clips-per-shard", "2", "--batch-frames", "20",
            "--num-workers", "1", "--no-progress", "--views", "2", *extra]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    manifest = synthetic / "train.csv"
    reference = run_extract(_cfg(tiny_run, manifest, tmp_path / "ref", views=2, clips_per_shard=2, num_workers=0))
    root = tmp_path / "killed"
    proc = subprocess.Popen(_cli_extract(tiny_run, manifest, root), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(root.glob("*/shards/*.done")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the extractor and its decode workers, mid-run
    proc.wait()
    cache_dir = root / reference.cache_dir.name
    done = len(list(cache_dir.glob("shards/*.done")))
    assert 1 <= done < 14 and not (cache_dir / "cache.json").exists(), "the kill did not land mid-run"
    assert "unfinished" in verify_cache(cache_dir)[0]
    # A half-written shard without its marker must be deleted and redone, not trusted.
    stale = next(i for i in range(14) if layout.read_marker(cache_dir, i) is None)
    write_shard(layout.shard_path(cache_dir, stale), read_shard(layout.shard_path(reference.cache_dir, 0)))
    out = subprocess.run(_cli_extract(tiny_run, manifest, root), capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["shards_extracted"] == 14 - done and "resuming" in out.stderr
    got, want = cache_arrays(cache_dir), cache_arrays(reference.cache_dir)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert verify_cache(cache_dir) == []


def test_verify_catches_a_lost_marker_corruption_and_nan(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    def fresh() -> Path:
        shutil.rmtree(tmp_path / "c", ignore_errors=True)
        return run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path / "c", mode="eval", num_workers=0)).cache_dir

    cache_dir = fresh()
    original = cache_arrays(cache_dir)
    layout.marker_path(cache_dir, 1).unlink()
    assert verify_cache(cache_dir) == ["shard 1: completion marker missing or invalid"]
    r = CliRunner().invoke(cli, ["cache", "verify", str(cache_dir)])
    assert r.exit_code == 1 and "marker missing" in r.output
    # Rerunning the extraction redoes the shard that lost its marker; the result is the same.
    again = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path / "c", mode="eval", num_workers=0))
    assert again.shards_extracted == 1 and verify_cache(cache_dir) == []
    for name, a in cache_arrays(cache_dir).items():
        np.testing.assert_array_equal(a, original[name], err_msg=name)

    chunk = next((layout.shard_path(cache_dir, 0) / "features").rglob("c/*/*/*/*"))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # flip bits inside the compressed data
    chunk.write_bytes(bytes(raw))
    problems = verify_cache(cache_dir)  # the chunk's CRC32C fails: corrupt data never decodes silently
    assert len(problems) == 1 and problems[0].startswith("shard 0: cannot read its data"), problems
    cache = FeatureCache(cache_dir)
    with pytest.raises(ValueError, match="checksum"):  # training reads fail loudly too
        [cache.features(i) for i in range(8)]

    cache_dir = fresh()
    data = read_shard(layout.shard_path(cache_dir, 1))
    data.features[2, 0, 3, 5] = np.nan  # a NaN inside a valid clip, written cleanly
    data.features[4, 0, 0, 0] = np.inf  # and an overflow
    write_shard(layout.shard_path(cache_dir, 1), data)
    problems = verify_cache(cache_dir)
    assert any("2 valid clip(s) hold NaN or inf (first: clip 10)" in p for p in problems)
    assert any("checksum mismatch" in p for p in problems)


def test_verify_checks_manifest_coverage(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    result = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=0))
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["cache", "verify", str(result.cache_dir), "--manifest", str(synthetic / "val.csv")]
        ).exit_code
        == 0
    )
    r = runner.invoke(cli, ["cache", "verify", str(result.cache_dir), "--manifest", str(synthetic / "train.csv")])
    assert r.exit_code == 1 and "does not cover the given manifest" in r.output
    relabelled = tmp_path / "relabelled.csv"  # same rows and videos, one label changed
    lines = (synthetic / "val.csv").read_text().splitlines()
    path, label = lines[1].split(",")
    other = next(line.split(",")[1] for line in lines[2:] if line.split(",")[1] != label)
    relabelled.write_text("\n".join([lines[0], f"{synthetic / path},{other}"] + [
        f"{synthetic / line.split(',')[0]},{line.split(',')[1]}" for line in lines[2:]]) + "\n")
    r = runner.invoke(cli, ["cache", "verify", str(result.cache_dir), "--manifest", str(relabelled)])
    assert r.exit_code == 1 and "differs from the one the cache was made from" in r.output
    same = relabelled.read_text().replace(f"{synthetic / path},{other}", f"{synthetic / path},{label}")
    relabelled.write_text(same)  # the original content, spelled with absolute paths
    assert runner.invoke(cli, ["cache", "verify", str(result.cache_dir), "--manifest", str(relabelled)]).exit_code == 0
    r = runner.invoke(cli, ["cache", "info", str(result.cache_dir), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["clips"] == 14
    r = runner.invoke(cli, ["cache", "list", str(tmp_path)])
    assert r.exit_code == 0 and r.output.startswith(
        f"{result.cache_dir.name}  complete  14 clips (0 failed)  1 x 6 x 192"
    )


def test_float32_and_pyav_caches_agree_with_the_default(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    base = _cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=0)
    default = cache_arrays(run_extract(base).cache_dir)
    fp32 = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=0, dtype="float32"))
    pyav = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=0, backend="pyav"))
    assert len({fp32.cache_dir, pyav.cache_dir}) == 2 and len(list(tmp_path.iterdir())) == 3
    for result in (fp32, pyav):
        arrays = cache_arrays(result.cache_dir)
        assert arrays["features"].dtype == (np.float32 if result is fp32 else np.float16)
        np.testing.assert_allclose(arrays["features"].astype(np.float32), default["features"].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(arrays["frame_index"], default["frame_index"])
    assert json.loads((pyav.cache_dir / "cache.json").read_text())["extraction"]["decoder"] == "pyav"


def test_torchrun_two_ranks_equal_one_process(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    manifest = synthetic / "train.csv"
    single = run_extract(_cfg(tiny_run, manifest, tmp_path / "one", views=2, clips_per_shard=4, num_workers=0))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sfa_cache.cli", "extract", "--model", str(tiny_run), "--manifest", str(manifest), "--cache-root",
           str(tmp_path / "two"), "--frames", "6", "--views", "2", "--clips-per-shard", "4", "--batch-frames", "20",
           "--num-workers", "1", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(out.stdout.strip().splitlines()) == 1  # one summary for the job, from rank 0
    cache_dir = tmp_path / "two" / single.cache_dir.name
    markers = [layout.read_marker(cache_dir, i) for i in range(7)]
    assert all(markers) and verify_cache(cache_dir) == []
    for name, a in cache_arrays(single.cache_dir).items():
        b = cache_arrays(cache_dir)[name]
        if name == "features":
            np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32), rtol=2e-3, atol=2e-3)
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)


def test_bare_backbone_with_local_weights(synthetic: Path, tmp_path: Path) -> None:
    """The no-Stage-1 ablation: a timm backbone whose weights come from a local file."""
    import timm

    torch.manual_seed(5)
    image_model = timm.create_model(TINY_BACKBONE, img_size=32, num_classes=10)
    save_file(image_model.state_dict(), str(tmp_path / "w.safetensors"))
    cfg = ExtractConfig(backbone=TINY_BACKBONE, image_size=32, backbone_weights=str(tmp_path / "w.safetensors"),
                        manifest=str(synthetic / "val.csv"), cache_root=str(tmp_path / "c"), frames=4, mode="eval",
                        num_workers=0, progress=False)
    cache = FeatureCache(run_extract(cfg).cache_dir)
    reader = open_video(read_manifest(synthetic / "val.csv", cache.classes).entries[0].path)
    idx = uniform_indices(reader.num_frames, 4, train=False)
    mean, std = cache.index.spatial.mean, cache.index.spatial.std
    # Rounded to uint8 before normalisation, as extraction ships them (see the first test above).
    frames = normalise_uint8(eval_crops(reader.get_frames(idx), 32, tuple(mean), tuple(std), normalise=False)[0],
                             mean, std)
    with torch.no_grad():
        expected = image_model.eval().forward_head(image_model.forward_features(frames), pre_logits=True)
    torch.testing.assert_close(
        torch.from_numpy(cache.features(0)[0].astype(np.float32)), expected, rtol=2e-3, atol=2e-3
    )


@pytest.mark.parametrize("args, match", [
    (["--frames", "0"], "--frames must be >= 1"),
    (["--mode", "eval", "--views", "2"], "--views is for --mode train"),
    (["--backbone", TINY_BACKBONE], "exactly one of --model"),
    (["--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--seed", "-1"], "--seed must be >= 0"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tiny_run: Path, synthetic: Path, tmp_path: Path, args, match
) -> None:
    r = CliRunner().invoke(cli, ["extract", "--model", str(tiny_run), "--manifest", str(synthetic / "val.csv"),
                                 "--cache-root", str(tmp_path / "c"), "--no-progress", *args])
    assert isinstance(r.exception, SystemExit) and r.exit_code != 0 and match in r.output  # not a crash
    assert not (tmp_path / "c").exists()


def test_cli_rejects_a_folder_that_is_not_a_run(synthetic: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["extract", "--model", str(tmp_path), "--manifest", str(synthetic / "val.csv"),
                                 "--cache-root", str(tmp_path / "c")])
    assert r.exit_code == 1 and "is not a run directory" in r.output
    r = CliRunner().invoke(cli, ["cache", "info", str(tmp_path)])
    assert r.exit_code == 1 and "is not a feature cache" in r.output


@pytest.mark.gpu
def test_cuda_bf16_extraction_matches_cpu(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    cpu = cache_arrays(
        run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", device="cpu")).cache_dir
    )
    result = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", device="cuda"))
    index = json.loads((result.cache_dir / "cache.json").read_text())
    assert index["extraction"]["amp"] == "bf16"  # auto on CUDA
    gpu = cache_arrays(result.cache_dir)
    np.testing.assert_allclose(
        gpu["features"].astype(np.float32), cpu["features"].astype(np.float32), rtol=0.05, atol=0.05
    )


def test_same_csv_over_other_videos_gets_its_own_cache(tiny_run: Path, videos, tmp_path: Path) -> None:
    """The key covers what the manifest points at, not only its text."""
    results = []
    for folder, source in (("a", "index24"), ("b", "textured")):
        (tmp_path / folder).mkdir()
        shutil.copy(videos[source], tmp_path / folder / "v.mp4")
        (tmp_path / folder / "m.csv").write_text("path,label\nv.mp4,move_left\n")
        results.append(run_extract(_cfg(tiny_run, tmp_path / folder / "m.csv", tmp_path / "caches", num_workers=0)))
    assert results[0].cache_dir != results[1].cache_dir and not results[1].reused


def test_a_second_extraction_of_the_same_cache_is_refused(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_run, synthetic / "val.csv", tmp_path, mode="eval", num_workers=0)
    cache_dir = run_extract(cfg).cache_dir
    layout.marker_path(cache_dir, 1).unlink()  # shard 1 is to be redone ...
    with layout.shard_locks(cache_dir, [1]):  # ... but another process is writing it
        with pytest.raises(SfaError, match="shard 1 of .* is being written by another extraction"):
            run_extract(cfg)
    assert run_extract(cfg).shards_extracted == 1 and verify_cache(cache_dir) == []


def test_cache_export_to_hdf5(tiny_run: Path, synthetic: Path, videos, tmp_path: Path) -> None:
    """`cache export` writes exactly the cache's arrays; failed clips stay NaN and invalid."""
    import h5py

    manifest = tmp_path / "m.csv"
    rows = (synthetic / "val.csv").read_text().splitlines()[1:5]
    manifest.write_text("path,label\n" + "".join(f"{synthetic}/{r}\n" for r in rows[:2])
                        + f"{videos['garbage']},{rows[2].split(',')[1]}\n" + f"{synthetic}/{rows[3]}\n")
    cache_dir = run_extract(_cfg(tiny_run, manifest, tmp_path / "c", views=2)).cache_dir
    out = tmp_path / "features.h5"
    r = CliRunner().invoke(cli, ["cache", "export", str(cache_dir), str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["clips"] == 4
    cache = FeatureCache(cache_dir)
    with h5py.File(out, "r") as h5:
        assert h5["features"].shape == (4, 2, 6, cache.dim) and h5["features"].dtype == np.float16
        for clip in range(4):
            np.testing.assert_array_equal(h5["features"][clip], cache.features(clip))  # NaN == NaN here
            np.testing.assert_array_equal(h5["frame_index"][clip], cache.frame_index(clip))
        assert h5["valid"][...].tolist() == [True, True, False, True] and np.isnan(h5["features"][2]).all()
        np.testing.assert_array_equal(h5["labels"][...], cache.labels)
        assert h5["clip_index"][...].tolist() == [0, 1, 2, 3]
        assert json.loads(h5.attrs["classes"]) == cache.classes and h5.attrs["fingerprint"] == cache.fingerprint
    again = CliRunner().invoke(cli, ["cache", "export", str(cache_dir), str(out)])
    assert again.exit_code == 1 and "exists" in again.output
    unfinished = CliRunner().invoke(cli, ["cache", "export", str(tmp_path / "c"), str(tmp_path / "x.h5")])
    assert unfinished.exit_code == 1 and "not a feature cache" in unfinished.output and not (tmp_path / "x.h5").exists()


def test_malformed_or_newer_indexes_and_run_records_are_one_line_errors(tiny_run: Path, synthetic: Path,
                                                                        tmp_path: Path) -> None:
    cache_dir = run_extract(_cfg(tiny_run, synthetic / "val.csv", tmp_path / "c", mode="eval")).cache_dir
    index_file = cache_dir / "cache.json"
    good = json.loads(index_file.read_text())
    assert json.loads(json.dumps(read_cache_index(cache_dir).as_json())) == good  # the typed index round-trips
    no_dim = {k: v for k, v in good.items() if k != "dim"}
    for broken, message in (({**good, "format": 2}, "newer sfa-cache"), ({**good, "views": "two"}, "expected int"),
                            ({**good, "surprise": 1}, "unknown key"), (no_dim, "dim")):
        index_file.write_text(json.dumps(broken))
        r = CliRunner().invoke(cli, ["cache", "info", str(cache_dir)])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output
    index_file.write_text("{not json")
    assert "is not valid JSON" in CliRunner().invoke(cli, ["cache", "info", str(cache_dir)]).output
    record = tiny_run / "config.json"
    saved = record.read_text()
    try:
        record.write_text(json.dumps({**json.loads(saved), "format": 7}))
        r = CliRunner().invoke(cli, ["extract", "--model", str(tiny_run), "--manifest", str(synthetic / "val.csv"),
                                     "--cache-root", str(tmp_path / "d"), "--frames", "4"])
        assert r.exit_code == 1 and "run format 7" in r.output and "Traceback" not in r.output, r.output
    finally:
        record.write_text(saved)


def test_parity_recomputes_clips_through_the_recorded_model_and_preprocessing(
    tiny_run: Path, synthetic: Path, tmp_path: Path
) -> None:
    """`cache verify --parity N`: augmented train views (seeded per clip) and eval crops are made
    again from the videos and encoded again; the difference is float16 storage, nothing more."""
    from sfa_cache.pipelines.parity import check_parity

    run = tmp_path / "run"  # a copy: its weights change below
    shutil.copytree(tiny_run, run)
    train = run_extract(_cfg(run, synthetic / "val.csv", tmp_path, views=2, seed=3, randaugment_ops=2,
                             randaugment_magnitude=9, num_workers=0))
    val = run_extract(_cfg(run, synthetic / "val.csv", tmp_path, mode="eval", eval_crops=3, num_workers=0))
    for result in (train, val):
        report = check_parity(result.cache_dir, 3, progress=False)
        assert report.ok and len(report.clips) == 3 and len(set(report.clips)) == 3
        assert 0 < report.largest < 2e-3  # float16 rounding of O(1) tokens: at most 2^-11 relative
    r = CliRunner().invoke(cli, ["cache", "verify", str(train.cache_dir), "--parity", "2"])
    assert r.exit_code == 0 and "parity: 2 clip(s) recomputed" in r.output and "ok:" in r.output
    # A bar below float16's resolution: the check reports the difference and fails.
    r = CliRunner().invoke(cli, ["cache", "verify", str(train.cache_dir), "--parity", "2", "--tolerance", "1e-7"])
    assert r.exit_code == 1 and "differ from the recomputed ones" in r.output and "Traceback" not in r.output
    for bad in ("nan", "-1e-3", "inf"):  # a check that cannot fail (NaN), or cannot pass: refused as input
        r = CliRunner().invoke(cli, ["cache", "verify", str(train.cache_dir), "--parity", "2", "--tolerance", bad])
        assert r.exit_code == 1 and "--tolerance must be a finite number >= 0" in r.output, (bad, r.output)
        assert "parity:" not in r.output and "Traceback" not in r.output

    # The run moved: the error says which option points at it, and that option works.
    moved = tmp_path / "moved-run"
    run.rename(moved)
    r = CliRunner().invoke(cli, ["cache", "verify", str(val.cache_dir), "--parity", "2"])
    assert r.exit_code == 1 and "is not there any more; pass --spatial-run" in r.output, r.output
    r = CliRunner().invoke(cli, ["cache", "verify", str(val.cache_dir), "--parity", "2", "--spatial-run", str(moved)])
    assert r.exit_code == 0 and "ok:" in r.output, r.output
    run = moved

    # Weights changed since extraction: refused, naming the fingerprints, before any clip is compared.
    weights = str(run / "model.safetensors")
    save_file({k: v + 0.01 if k.startswith("spatial.") else v for k, v in load_file(weights).items()}, weights)
    r = CliRunner().invoke(cli, ["cache", "verify", str(val.cache_dir), "--parity", "2", "--spatial-run", str(run)])
    assert r.exit_code == 1 and "changed since extraction" in r.output and "Traceback" not in r.output
