"""WebDataset shards and HDF5 frame files as inputs: equal to the video files they came from,
broken members recorded and skipped, `pack-wds` atomic per shard, extraction and Stage 1 on them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import cache_arrays

from sfa_cache.cache.format import layout
from sfa_cache.cache.format.index import read_cache_index
from sfa_cache.cache.format.verify import verify_cache
from sfa_cache.cli.main import cli
from sfa_cache.data.failures import read_failures
from sfa_cache.data.inputs import input_kind, input_name, read_input
from sfa_cache.data.manifest import infer_classes, manifest_digest, read_manifest
from sfa_cache.data.pack_wds import pack_wds
from sfa_cache.data.video_dataset import VideoClipDataset
from sfa_cache.errors import SfaError
from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.h5_reader import close_h5_files
from sfa_cache.video.reader import open_video
from sfa_cache.video.transforms import AugmentConfig

MEAN = STD = (0.5, 0.5, 0.5)
SHARD_SIZE = 40_000  # bytes: ~2 synthetic clips per shard, so the 28 clips span many shards


def _spec(train: bool, backend: str = "decord", frames: int = 8) -> ClipSpec:
    return ClipSpec(frames, 32, MEAN, STD, train, backend, AugmentConfig(color_jitter_prob=0.5, flip_prob=0.5))


def _assert_same_items(a: VideoClipDataset, b: VideoClipDataset, keys) -> None:
    for key in keys:
        x, y = a[key], b[key]
        assert x is not None and y is not None
        assert torch.equal(x[0], y[0]) and x[1] == y[1], key


@pytest.fixture(scope="module")
def packed(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The synthetic training set packed into WebDataset shards; -> the shard pattern."""
    manifest = read_manifest(synthetic / "train.csv", infer_classes(synthetic / "train.csv"))
    result = pack_wds(manifest, tmp_path_factory.mktemp("shards"), SHARD_SIZE, prefix="train", progress=False)
    return result.pattern


def test_input_kinds_and_names() -> None:
    assert input_kind("data/train.csv") == "csv"
    assert input_kind("shards/train-{000000..000099}.tar") == "wds"
    assert input_kind("{a,b}.tar") == "wds" and input_kind("x.TAR") == "wds"
    assert input_kind("frames.h5") == "h5" and input_kind("frames.hdf5") == "h5"
    assert input_name("shards/train-{000000..000099}.tar") == "train"
    assert input_name("data/val.csv") == "val" and input_name("/x/frames.h5") == "frames"
    assert input_name("k400.train.csv") == "k400.train"  # a CSV's stem, as caches were always named


# ---------------------------------------------------------------------------------------------
# WebDataset


def test_wds_read_equals_folder_read(packed: str, synthetic: Path) -> None:
    import webdataset as wds

    csv = read_input(str(synthetic / "train.csv"))
    shards = read_input(packed)
    assert len(list(Path(packed).parent.glob("*.tar"))) > 5  # really spread over shards
    assert read_input(packed).entries == shards.entries  # again, from the saved shard indexes
    assert shards.classes == csv.classes  # from the classes.json pack-wds wrote
    assert [e.label for e in shards.entries] == [e.label for e in csv.entries]
    assert [e.row for e in shards.entries] == [e.row for e in csv.entries]  # keys sort in manifest order
    for e_csv, e_wds in zip(csv.entries, shards.entries):
        assert e_wds.path.read() == Path(e_csv.path).read_bytes()
    # The same clips, augmentation included (items are seeded by (seed, epoch, index)).
    n = len(csv)
    _assert_same_items(VideoClipDataset(shards, _spec(True), seed=3), VideoClipDataset(csv, _spec(True), seed=3),
                       [(1, i) for i in range(n)])
    _assert_same_items(VideoClipDataset(shards, _spec(False)), VideoClipDataset(csv, _spec(False)), range(0, n, 5))
    _assert_same_items(
        VideoClipDataset(shards, _spec(False, "pyav")), VideoClipDataset(csv, _spec(False, "pyav")), [0, 9]
    )
    # The shards are ordinary WebDataset: its own reader sees the same samples and labels.
    samples = list(wds.WebDataset(packed, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in samples) == [e.key for e in shards.entries]
    assert sorted(int(s["cls"]) for s in samples) == sorted(e.label for e in csv.entries)


def test_pack_wds_shards_are_bounded_atomic_and_resumable(synthetic: Path, tmp_path: Path) -> None:
    rows = (synthetic / "train.csv").read_text().splitlines()
    manifest_path = tmp_path / "m.csv"  # the first 9 videos and one that does not exist
    manifest_path.write_text(
        "\n".join(rows[:10]).replace("videos/", f"{synthetic}/videos/") + "\nnope/gone.mp4,still\n"
    )
    manifest = read_manifest(manifest_path, infer_classes(synthetic / "train.csv"))
    out = tmp_path / "shards"
    first = pack_wds(manifest, out, SHARD_SIZE, prefix="part", progress=False)
    tars = sorted(out.glob("part-*.tar"))
    assert first.shards == len(tars) > 2 and first.samples == 9 and first.missing == [str(tmp_path / "nope/gone.mp4")]
    assert "gone.mp4" in (out / "missing.txt").read_text()
    assert all(t.stat().st_size <= SHARD_SIZE for t in tars)
    original = {t.name: t.read_bytes() for t in tars}
    # An interrupted pack: one shard never renamed into place, a temp file left behind.
    tars[1].unlink()
    (out / f".{tars[1].name}.abc.tmp").write_bytes(b"half a tar")
    again = pack_wds(manifest, out, SHARD_SIZE, prefix="part", progress=False)
    assert again.shards_written == 1 and {t.name: t.read_bytes() for t in sorted(out.glob("part-*.tar"))} == original
    assert len(read_input(first.pattern)) == 9
    with pytest.raises(SfaError, match="holds shards of another pack"):
        pack_wds(manifest, out, 2 * SHARD_SIZE, prefix="part", progress=False)
    # Packed with its own class list (a subset), read against the full list: labels go by name.
    few = tmp_path / "few.csv"
    few.write_text("\n".join(manifest_path.read_text().splitlines()[:4]) + "\n")
    subset = read_manifest(few, infer_classes(few))
    assert len(subset.classes) == 3
    other = pack_wds(subset, tmp_path / "subset", SHARD_SIZE, prefix="part", progress=False)
    assert [e.label for e in read_input(other.pattern, manifest.classes).entries] == [
        e.label for e in manifest.entries[:3]
    ]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def broken_shards(videos, tmp_path: Path) -> str:
    """Shards with one good sample each and every kind of broken member; -> their pattern."""
    good = videos["index24"].read_bytes()
    textured = videos["textured"].read_bytes()
    _tar(tmp_path / "s-0.tar", [
        ("a_good.mp4", good), ("a_good.cls", b"0"),
        ("b_garbage.mp4", videos["garbage"].read_bytes()), ("b_garbage.cls", b"1"),  # decodes to nothing
        ("c_nolabel.mp4", good),
        ("d_badlabel.mp4", good), ("d_badlabel.cls", b"abc"),
        ("e_novideo.cls", b"1"),
        ("f_json.webm", textured), ("f_json.json", json.dumps({"label": "move_right"}).encode()),
    ])
    _tar(
        tmp_path / "s-1.tar", [("g_good.mp4", good), ("g_good.cls", b"2"), ("h_cut.mp4", textured), ("h_cut.cls", b"1")]
    )
    whole = (tmp_path / "s-1.tar").read_bytes()
    cut = whole.index(textured[:64]) + 100  # in the middle of h_cut.mp4's data
    (tmp_path / "s-1.tar").write_bytes(whole[:cut])
    (tmp_path / "s-2.tar").write_bytes(b"this is not a tar file" * 50)
    _tar(tmp_path / "s-3.tar", [("i_good.mp4", good), ("i_good.cls", b"0"), ("j_lost.mp4", good), ("j_lost.cls", b"0")])
    with tarfile.open(tmp_path / "s-3.tar") as tar:
        offset = tar.getmember("j_lost.mp4").offset
    with open(tmp_path / "s-3.tar", "r+b") as f:  # a corrupt header mid-shard: tarfile stops silently there
        f.seek(offset)
        f.write(b"\xff" * 512)
    return str(tmp_path / "s-{0..3}.tar")


def test_broken_tar_members_are_recorded_and_skipped(broken_shards: str, tmp_path: Path) -> None:
    classes = ["move_left", "move_right", "still"]
    m = read_input(broken_shards, classes)
    assert [e.key for e in m.entries] == ["a_good", "b_garbage", "f_json", "g_good", "i_good"]
    assert [e.label for e in m.entries] == [0, 1, 1, 2, 0]  # .json labels by name
    reasons = {Path(s["path"]).name: s["reason"] for s in m.skipped}
    assert "no label" in reasons["s-0.tar:c_nolabel"]
    assert "unreadable label in .cls" in reasons["s-0.tar:d_badlabel"]
    assert "no video member" in reasons["s-0.tar:e_novideo"]
    assert "cut off" in reasons["s-1.tar:h_cut.mp4"]
    assert "not an uncompressed tar" in reasons["s-2.tar"]
    assert "corrupt tar header" in reasons["s-3.tar"] and "after 1 samples" in reasons["s-3.tar"]
    # A video member that does not decode is recorded and skipped when read, like a broken file.
    log = tmp_path / "failures.jsonl"
    ds = VideoClipDataset(m, _spec(False), failure_log=log)
    items = [ds[i] for i in range(len(m))]
    assert items[1] is None and all(items[i] is not None for i in (0, 2, 3, 4))
    assert [(f["row"], f["path"].endswith("s-0.tar:b_garbage.mp4")) for f in read_failures(log)] == [(1, True)]
    with pytest.raises(SfaError, match="not in the class list"):
        read_input(broken_shards, ["move_left", "still"])  # 'move_right' of f_json is unknown
    # The second read comes from the index saved beside each shard, and equals the first;
    # a shard rewritten since is indexed again.
    folder = Path(broken_shards).parent
    assert sorted(p.name for p in folder.glob(".*.sfa-index.json")) == [f".s-{i}.tar.sfa-index.json" for i in range(4)]
    again = read_input(broken_shards, classes)
    assert again.entries == m.entries and again.skipped == m.skipped
    _tar(folder / "s-0.tar", [("a_good.mp4", b"x" * 10), ("a_good.cls", b"2")])
    assert [(e.key, e.label) for e in read_input(broken_shards, classes).entries] == [("a_good", 2), ("g_good", 2),
                                                                                       ("i_good", 0)]


def test_wds_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SfaError, match="no tar shard matches"):
        read_input(str(tmp_path / "none-{000..003}.tar"))
    with pytest.raises(SfaError, match="only local"):
        read_input("pipe:curl -s http://x/train-{000..003}.tar")
    (tmp_path / "t-0.tar").write_bytes(b"junk" * 200)
    with pytest.raises(SfaError, match="no usable samples .*not an uncompressed tar"):
        read_input(str(tmp_path / "t-0.tar"))
    with pytest.raises(SfaError, match="cannot expand the shard pattern"):
        read_input(str(tmp_path / "t-{0..3.tar"))
    with pytest.raises(SfaError, match="compressed shards cannot be read by offset"):
        read_input(str(tmp_path / "t-{0..3}.tar.gz"))
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SfaError, match="not a text CSV manifest"):
        read_input(str(tmp_path / "binary.csv"))


def _extract_cfg(run: Path, source: str, root: Path, **over) -> ExtractConfig:
    values = dict(model=str(run), manifest=source, cache_root=str(root), frames=6, clips_per_shard=8,
                  batch_frames=24, num_workers=1, progress=False, views=2)
    values.update(over)
    return ExtractConfig(**values)


def test_extract_from_wds_equals_the_csv_cache_and_resumes(
    tiny_run: Path, synthetic: Path, packed: str, tmp_path: Path
) -> None:
    from_csv = run_extract(_extract_cfg(tiny_run, str(synthetic / "train.csv"), tmp_path / "c"))
    from_wds = run_extract(_extract_cfg(tiny_run, packed, tmp_path / "c"))
    assert from_wds.cache_dir != from_csv.cache_dir and from_wds.cache_dir.name.startswith("train-train-6f-")
    want, got = cache_arrays(from_csv.cache_dir), cache_arrays(from_wds.cache_dir)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    index = read_cache_index(from_wds.cache_dir)
    assert index.manifest.kind == "wds" and index.manifest.keys[0] == "00000000-000000"
    # Resume: a shard whose marker is lost is redone, the rest kept; the result is the same.
    layout.marker_path(from_wds.cache_dir, 1).unlink()
    again = run_extract(_extract_cfg(tiny_run, packed, tmp_path / "c"))
    assert again.cache_dir == from_wds.cache_dir and again.shards_extracted == 1
    for name, values in cache_arrays(again.cache_dir).items():
        np.testing.assert_array_equal(values, want[name], err_msg=name)
    assert verify_cache(again.cache_dir, read_input(packed)) == []


def test_extract_from_broken_shards_records_and_skips(tiny_run: Path, broken_shards: str, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("move_left\nmove_right\nstill\n")
    r = CliRunner().invoke(
        cli,
        [
            "extract", "--model", str(tiny_run), "--wds", broken_shards, "--classes", str(classes), "--cache-root",
            str(tmp_path / "c"), "--frames", "4", "--num-workers", "1", "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.splitlines()[-1])
    assert (summary["clips"], summary["valid"], summary["failed"]) == (5, 4, 1)
    cache_dir = Path(summary["cache"])
    arrays = cache_arrays(cache_dir)
    np.testing.assert_array_equal(arrays["valid"], [True, False, True, True, True])
    assert np.isnan(arrays["features"][1]).all()
    skipped = read_cache_index(cache_dir).manifest.skipped
    # no label, bad label, no video, the cut-off member and its shard, not a tar, a corrupt header
    assert len(skipped) == 7 and sum("truncated" in s["reason"] for s in skipped) == 2


# ---------------------------------------------------------------------------------------------
# HDF5


def _decoded(csv: Path) -> list[tuple[str, np.ndarray, str]]:
    """(key, every frame [T, H, W, 3], label) of each video of a manifest, decoded by decord."""
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    out = []
    for path, label, *_ in rows:
        reader = open_video(csv.parent / path)
        out.append((Path(path).stem, reader.get_frames(range(reader.num_frames)), label))
    return out


def _encode(frame: np.ndarray, fmt: str) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format=fmt)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def write_h5(path: Path, videos: list[tuple[str, np.ndarray, str]], layout_name: str, group: str = "") -> None:
    with h5py.File(path, "a") as f:
        for key, frames, label in videos:
            name = f"{group}/{key}" if group else key
            if layout_name == "raw":
                ds = f.create_dataset(name, data=frames, chunks=(1, *frames.shape[1:]))
                ds.attrs["label"] = label
            else:
                g = f.create_group(name)
                g.attrs["label"] = label
                ds = g.create_dataset("frames", (len(frames),), dtype=h5py.vlen_dtype(np.uint8))
                for i, frame in enumerate(frames):
                    ds[i] = _encode(frame, layout_name)


@pytest.fixture(scope="module")
def decoded_val(synthetic: Path) -> list[tuple[str, np.ndarray, str]]:
    return _decoded(synthetic / "val.csv")


@pytest.mark.parametrize("layout_name", ["raw", "PNG"])
def test_h5_input_equals_video_input(layout_name: str, decoded_val, synthetic: Path, tmp_path: Path) -> None:
    path = tmp_path / f"val-{layout_name}.h5"
    write_h5(path, decoded_val, layout_name)
    csv = read_input(str(synthetic / "val.csv"))
    h5 = read_input(str(path), csv.classes)
    assert [e.key for e in h5.entries] == [k for k, _, _ in decoded_val]  # the synthetic files sort like their rows
    assert [e.label for e in h5.entries] == [e.label for e in csv.entries]
    n = len(csv)
    _assert_same_items(VideoClipDataset(h5, _spec(True), seed=5), VideoClipDataset(csv, _spec(True), seed=5),
                       [(2, i) for i in range(n)])
    _assert_same_items(
        VideoClipDataset(h5, _spec(False, frames=32)), VideoClipDataset(csv, _spec(False, frames=32)), range(n)
    )


def test_h5_jpeg_frames_splits_and_broken_videos(decoded_val, tmp_path: Path) -> None:
    path = tmp_path / "all.h5"
    write_h5(path, decoded_val[:4], "JPEG", group="train")
    write_h5(path, decoded_val[4:6], "raw", group="val")
    with h5py.File(path, "a") as f:
        f.attrs["classes"] = ["flash_early", "flash_late", "move_down", "move_left", "move_right", "move_up", "still"]
        f.create_dataset("val/floats", data=np.zeros((4, 8, 8, 3), np.float32)).attrs["label"] = "still"
        bad = f["train"].create_group("zz_bad_frame")
        bad.attrs["label"] = "still"
        frames = bad.create_dataset("frames", (3,), dtype=h5py.vlen_dtype(np.uint8))
        frames[0] = _encode(decoded_val[0][1][0], "JPEG")
        frames[1] = np.frombuffer(b"not an image at all", np.uint8)
        frames[2] = frames[0]
        f.create_dataset("notes", data=np.arange(3))  # no label: not a video, ignored
    train = read_input(str(path), split="train")
    val = read_input(str(path), split="val")
    assert len(train) == 5 and len(val) == 2 and train.classes[0] == "flash_early"  # the file's class list
    assert len(val.skipped) == 1 and "got float32" in val.skipped[0]["reason"]
    jpeg = VideoClipDataset(train, _spec(False))[0][0]
    write_h5(tmp_path / "raw.h5", decoded_val[:1], "raw")
    raw = VideoClipDataset(read_input(str(tmp_path / "raw.h5"), train.classes), _spec(False))[0][0]
    assert jpeg.shape == raw.shape == (8, 3, 32, 32)
    assert 0 < (jpeg - raw).abs().mean() < 0.05  # lossy JPEG: close to the raw frames, not equal
    log = tmp_path / "failures.jsonl"
    assert VideoClipDataset(train, _spec(False, frames=3), failure_log=log)[4] is None  # the undecodable frame
    assert "frame 1 is not a decodable JPEG/PNG image" in read_failures(log)[0]["reason"]
    with pytest.raises(SfaError, match="cannot open HDF5 file"):
        read_input(str(tmp_path / "missing.h5"))
    # Frames rewritten in place (same shapes, same storage size): the manifest's digest changes.
    before = manifest_digest(val)
    close_h5_files()  # this process holds the file open for reading
    with h5py.File(path, "a") as f:
        f[f"val/{decoded_val[4][0]}"][0] = 255 - decoded_val[4][1][0]
    assert manifest_digest(read_input(str(path), split="val")) != before


def test_stage1_trains_on_shards_and_evaluates_on_h5(packed: str, decoded_val, tmp_path: Path) -> None:
    val = tmp_path / "val.h5"
    write_h5(val, decoded_val, "raw")
    out = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        [
            "stage1", "--train-wds", packed, "--val-h5", str(val), "--out", str(out), "--backbone",
            "vit_tiny_patch16_224", "--image-size", "32", "--frames", "4", "--temporal-depth", "1", "--epochs", "1",
            "--batch-size", "8", "--lr", "0.01", "--num-workers", "1", "--device", "cpu", "--flip-prob", "0",
            "--decode-timeout", "0",
        ],
    )  # the DataLoader path
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch = [rec for rec in records if rec["kind"] == "epoch"][-1]
    assert (epoch["val_clips"], epoch["val_dropped"]) == (len(decoded_val), 0)
    assert (out / "model.safetensors").is_file() and os.path.getsize(out / "model.safetensors") > 0
    # evaluate takes the same inputs; its predictions name each clip by its location.
    r = CliRunner().invoke(
        cli, ["evaluate", "--run", str(out), "--wds", packed, "--num-workers", "0", "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "eval" / "train-1x1" / "metrics.json").read_text())
    assert (metrics["videos"], metrics["failed"]) == (28, 0)
    predictions = (out / "eval" / "train-1x1" / "predictions.csv").read_text().splitlines()
    assert predictions[1].split(",")[1].endswith("train-000000.tar:00000000-000000.mp4")


def test_torchrun_extraction_from_wds_equals_one_process_from_csv(tiny_run: Path, synthetic: Path, packed: str,
                                                                 tmp_path: Path) -> None:
    single = run_extract(_extract_cfg(tiny_run, str(synthetic / "train.csv"), tmp_path / "one", num_workers=0))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sfa_cache.cli", "extract", "--model", str(tiny_run), "--wds", packed, "--cache-root",
           str(tmp_path / "two"), "--frames", "6", "--views", "2", "--clips-per-shard", "8", "--batch-frames", "24",
           "--num-workers", "1", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    cache_dir = Path(json.loads(out.stdout.splitlines()[-1])["cache"])
    assert verify_cache(cache_dir) == []
    got, want = cache_arrays(cache_dir), cache_arrays(single.cache_dir)
    for name in want:  # ranks run other batch compositions: features agree to float tolerance
        if name == "features":
            np.testing.assert_allclose(
                got[name].astype(np.float32), want[name].astype(np.float32), rtol=2e-3, atol=2e-3
            )
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
