"""Manifests, the synthetic generator, and the clip dataset with failure recording."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch

from sfa_cache.data.batches import EpochSampler, collate_skip_failed
from sfa_cache.data.failures import read_failures
from sfa_cache.data.loaders import TimedLoader
from sfa_cache.data.manifest import Manifest, ManifestEntry, infer_classes, read_classes_file, read_manifest
from sfa_cache.data.synthetic import CLASSES, SyntheticConfig, make_synthetic, render_clip
from sfa_cache.data.video_dataset import VideoClipDataset
from sfa_cache.errors import SfaError
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.locations import TarMember
from sfa_cache.video.reader import open_video


def _write(path, text: str):
    path.write_text(text)
    return path


def test_manifest_labels_by_name_and_index_relative_paths(tmp_path) -> None:
    m = _write(tmp_path / "m.csv", "path,label\na.mp4,cat\nsub/b.mp4,1\n/abs/c.mp4,dog\n")
    manifest = read_manifest(m, ["cat", "dog"])
    assert [e.label for e in manifest.entries] == [0, 1, 1]
    assert manifest.entries[0].path == tmp_path / "a.mp4"
    assert str(manifest.entries[2].path) == "/abs/c.mp4"
    other = read_manifest(m, ["cat", "dog"], root=tmp_path / "videos")
    assert other.entries[1].path == tmp_path / "videos" / "sub" / "b.mp4"
    assert [e.row for e in manifest.entries] == [0, 1, 2]


def test_manifest_split_column(tmp_path) -> None:
    m = _write(tmp_path / "m.csv", "path,label,split\na.mp4,x,train\nb.mp4,y,val\nc.mp4,y,train\n")
    train = read_manifest(m, ["x", "y"], split="train")
    assert [e.row for e in train.entries] == [0, 2]
    assert [e.row for e in read_manifest(m, ["x", "y"], split="val").entries] == [1]
    with pytest.raises(SfaError, match="no rows with split='test'"):
        read_manifest(m, ["x", "y"], split="test")


def test_manifest_errors(tmp_path) -> None:
    with pytest.raises(SfaError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv", ["a"])
    bad = _write(tmp_path / "bad.csv", "file,class\na.mp4,x\n")
    with pytest.raises(SfaError, match="'path' and 'label'"):
        read_manifest(bad, ["x"])
    m = _write(tmp_path / "m.csv", "path,label\na.mp4,x\nb.mp4,zebra\n")
    with pytest.raises(SfaError, match="line 3: label 'zebra' is not in the class list"):
        read_manifest(m, ["x", "y"])
    with pytest.raises(SfaError, match="line 2: label '5'"):
        read_manifest(_write(tmp_path / "i.csv", "path,label\na.mp4,5\n"), ["x", "y"])


def test_class_inference_and_files(tmp_path) -> None:
    assert infer_classes(_write(tmp_path / "n.csv", "path,label\na,b\nc,a\nd,b\n")) == ["a", "b"]
    assert infer_classes(_write(tmp_path / "i.csv", "path,label\na,0\nc,3\n")) == ["0", "1", "2", "3"]
    assert read_classes_file(_write(tmp_path / "c.txt", "run\njump\n\n")) == ["run", "jump"]
    assert read_classes_file(_write(tmp_path / "c.json", '["a", "b"]')) == ["a", "b"]
    with pytest.raises(SfaError, match="duplicate"):
        read_classes_file(_write(tmp_path / "d.txt", "a\na\n"))


# --- synthetic data -------------------------------------------------------------------------------

def test_synthetic_dataset_files_and_manifests(synthetic) -> None:
    classes = read_classes_file(synthetic / "classes.txt")
    assert classes == list(CLASSES)
    train = read_manifest(synthetic / "train.csv", classes)
    val = read_manifest(synthetic / "val.csv", classes)
    assert len(train) == 4 * len(CLASSES) and len(val) == 2 * len(CLASSES)
    assert np.bincount([e.label for e in train.entries]).tolist() == [4] * len(CLASSES)
    reader = open_video(train.entries[0].path)
    assert reader.num_frames == 24
    assert reader.get_frames([0]).shape == (1, 32, 32, 3)


def test_synthetic_is_deterministic_per_seed(tmp_path) -> None:
    cfg = SyntheticConfig(train_per_class=1, val_per_class=1, test_per_class=1, num_frames=24, size=32, flash_len=2,
                          seed=3)
    make_synthetic(tmp_path / "a", cfg)
    make_synthetic(tmp_path / "b", cfg)
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.csv").read_text() == (tmp_path / "b" / f"{split}.csv").read_text()
    video = "videos/train/000004.mp4"
    assert (tmp_path / "a" / video).read_bytes() == (tmp_path / "b" / video).read_bytes()
    # A test split is drawn apart: the train and val videos of a seed stay as they were without it.
    make_synthetic(tmp_path / "c", dataclasses.replace(cfg, test_per_class=0))
    assert not (tmp_path / "c" / "test.csv").exists()
    for video in ("videos/train/000004.mp4", "videos/val/000002.mp4"):
        assert (tmp_path / "a" / video).read_bytes() == (tmp_path / "c" / video).read_bytes()
    assert (tmp_path / "a" / "videos/test/000002.mp4").read_bytes() != (tmp_path / "a" / "videos/val/000002.mp4"
                                                                         ).read_bytes()
    other = render_clip("flash_early", SyntheticConfig(seed=4), np.random.default_rng([4, 0, 5]))
    same = render_clip("flash_early", SyntheticConfig(seed=4), np.random.default_rng([4, 0, 5]))
    assert np.array_equal(other, same)


def test_synthetic_rerun_finishes_and_refuses_other_settings(tmp_path) -> None:
    cfg = SyntheticConfig(train_per_class=1, val_per_class=1, num_frames=24, size=32, flash_len=2)
    make_synthetic(tmp_path / "d", cfg)
    lost = tmp_path / "d" / "videos" / "val" / "000003.mp4"
    original = lost.read_bytes()
    lost.unlink()  # an interrupted run
    make_synthetic(tmp_path / "d", cfg)
    assert lost.read_bytes() == original
    with pytest.raises(SfaError, match="other settings"):
        make_synthetic(tmp_path / "d", SyntheticConfig(train_per_class=2, num_frames=24, size=32, flash_len=2))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(SfaError, match="not empty"):
        make_synthetic(tmp_path / "x", cfg)


def _lit_fraction(label: str, n_sampled: int, trials: int = 40) -> list[int]:
    """Flashes visible in `n_sampled` centre-sampled frames of synthetic clips of `label`."""
    from sfa_cache.video.sampling import uniform_indices

    cfg = SyntheticConfig()
    seen = []
    for i in range(trials):
        clip = render_clip(label, cfg, np.random.default_rng([99, i]))
        idx = uniform_indices(cfg.num_frames, n_sampled, train=False)
        white = (clip[idx].min(axis=-1) > 200).reshape(n_sampled, -1).any(axis=1)
        seen.append(int(white.sum()))
    return seen


def test_flash_classes_need_more_than_8_frames() -> None:
    """32 frames always see the flash (twice); 8 frames often miss it, and then it looks `still`."""
    for label in ("flash_early", "flash_late"):
        assert set(_lit_fraction(label, 32)) == {2}
        at8 = _lit_fraction(label, 8)
        assert 0 in at8 and 1 in at8
    assert set(_lit_fraction("still", 32)) == {0}


# --- clip dataset ---------------------------------------------------------------------------------

def _spec(train: bool) -> ClipSpec:
    return ClipSpec(frames=4, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, train=train)


def test_dataset_items_and_determinism(synthetic) -> None:
    classes = read_classes_file(synthetic / "classes.txt")
    ds = VideoClipDataset(read_manifest(synthetic / "train.csv", classes), _spec(True), seed=1)
    clip, label = ds[(0, 3)]
    assert clip.shape == (4, 3, 32, 32) and label == 3
    assert torch.equal(ds[(0, 3)][0], clip)  # same (epoch, index): same clip
    assert not torch.equal(ds[(1, 3)][0], clip)  # next epoch: new augmentation


def test_dataset_records_and_skips_broken_videos(tmp_path, synthetic, videos) -> None:
    for name in ("garbage", "empty"):
        shutil.copy(videos[name], tmp_path / f"{name}.mp4")
    good = synthetic / "videos" / "train" / "000000.mp4"
    m = _write(tmp_path / "m.csv", f"path,label\n{good},a\ngarbage.mp4,b\nempty.mp4,a\nmissing.mp4,b\n")
    log = tmp_path / "failures.jsonl"
    ds = VideoClipDataset(read_manifest(m, ["a", "b"]), _spec(False), failure_log=log)
    batch = collate_skip_failed([ds[i] for i in range(4)])
    clips, labels, dropped = batch
    assert clips.shape == (1, 4, 3, 32, 32) and labels.tolist() == [0] and dropped == 3
    failures = read_failures(log)
    assert sorted(f["row"] for f in failures) == [1, 2, 3]
    assert any("empty" in f["reason"] for f in failures)
    assert collate_skip_failed([None, None]) == (None, None, 2)


def test_epoch_sampler_order_depends_on_seed_and_epoch_only() -> None:
    s = EpochSampler(10, shuffle=True, seed=5)
    first = list(s)
    assert sorted(i for _, i in first) == list(range(10))
    assert all(e == 0 for e, _ in first)
    s.set_epoch(1)
    second = list(s)
    assert [i for _, i in second] != [i for _, i in first] and all(e == 1 for e, _ in second)
    again = EpochSampler(10, shuffle=True, seed=5)
    again.set_epoch(1)
    assert list(again) == second
    assert [i for _, i in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]


def test_video_loader_kills_a_hung_decode_records_it_and_keeps_order(synthetic, tmp_path) -> None:
    fifo = tmp_path / "hangs.tar"
    os.mkfifo(fifo)  # opening it for reading blocks forever: a decode that never returns
    csv = read_manifest(synthetic / "train.csv", infer_classes(synthetic / "train.csv"))
    hung = ManifestEntry(TarMember(str(fifo), "x.mp4", 0, 100), label=0, row=99)
    manifest = Manifest(csv.source, [csv.entries[0], hung, *csv.entries[1:4]], csv.classes)
    log = tmp_path / "failures.jsonl"
    ds = VideoClipDataset(manifest, ClipSpec(4, 32, (0.5,) * 3, (0.5,) * 3, True), seed=1, failure_log=log)
    sampler = EpochSampler(len(ds), shuffle=True, seed=2)
    loader = TimedLoader(ds, sampler, batch_size=2, workers=2, timeout=2.0)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert sum(b[2] for b in batches) == 1 and sum(len(b[1]) for b in batches if b[1] is not None) == 4
    # The same batches, in the same order, as decoding inline (what a DataLoader would give).
    keys = list(sampler)
    want = [ds[k] for k in keys if k[1] != 1]
    got = [(clip, label) for b in batches if b[0] is not None for clip, label in zip(b[0], b[1])]
    assert all(torch.equal(g[0], w[0]) and int(g[1]) == w[1] for g, w in zip(got, want))
    failures = read_failures(log)
    assert [f["row"] for f in failures] == [99] and "timed out after 2s" in failures[0]["reason"]
