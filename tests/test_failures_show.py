"""A failure never looks like success: runs that learnt from nothing, a decoder that cannot load,
torn metrics, checks that cannot fail, and user mistakes that must be one `Error:` line."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE

from sfa_cache.cli.main import cli
from sfa_cache.errors import SfaError
from sfa_cache.run.progress import read_metrics


def _run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _one_line_error(result, match: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and match in errors[0], result.output


def _stage1(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["stage1", "--train-manifest", str(manifest), "--val-manifest", str(manifest), "--out", str(out),
            "--backbone", TINY_BACKBONE, "--image-size", "32", "--frames", "2", "--temporal-depth", "1",
            "--epochs", "2", "--batch-size", "4", "--num-workers", "0", "--log-every", "0", *extra]


def _fake_videos(synthetic: Path, folder: Path, count: int) -> tuple[Path, list[tuple[Path, Path]]]:
    """A manifest of `count` text files named .mp4, and (fake, real video) pairs to repair it with."""
    rows = (synthetic / "train.csv").read_text().splitlines()[1 : count + 1]
    folder.mkdir()
    pairs, lines = [], []
    for i, row in enumerate(rows):
        real, label = row.rsplit(",", 1)
        fake = folder / f"clip{i}.mp4"
        fake.write_text("this is not a video\n")
        pairs.append((fake, synthetic / real))
        lines.append(f"{fake},{label}")
    manifest = folder / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(lines) + "\n")
    return manifest, pairs


@pytest.mark.parametrize("count", [6, 20])  # under and over the early stop after 16 failed clips
def test_stage1_on_undecodable_videos_fails_and_is_not_marked_complete(synthetic: Path, tmp_path: Path,
                                                                        count: int) -> None:
    manifest, pairs = _fake_videos(synthetic, tmp_path / "data", count)
    out = tmp_path / "run"
    result = _run(_stage1(manifest, out))
    _one_line_error(result, "failed to load" if count > 16 else "none of the")
    assert not (out / "train_state.pt").exists() and not (out / "model.safetensors").exists()
    assert read_metrics(out) == []  # no epoch recorded as trained
    for fake, real in pairs:  # the data fixed: the same run resumes and trains
        shutil.copyfile(real, fake)
    again = _run(_stage1(manifest, out, "--resume"))
    assert again.exit_code == 0, again.output
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["train_clips"] for r in epochs] == [count, count]


def test_torchcodec_that_cannot_decode_is_one_line_before_any_clip(synthetic: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torchcodec cannot load FFmpeg (or is not installed), every command says what to
    install, once, before any clip is tried; where it can, it decodes."""
    from sfa_cache.video import reader

    reader._check_installed.cache_clear()
    try:
        reader.check_decoder("torchcodec")
        ffmpeg_loads = True
    except SfaError as e:
        ffmpeg_loads = False
        assert "apt-get install libavcodec59 libavformat59" in str(e) and "\n" not in str(e)
    if ffmpeg_loads:  # decodes a real video through the same reader
        frames = reader.open_video(synthetic / (synthetic / "val.csv").read_text().splitlines()[1].split(",")[0],
                                   "torchcodec").get_frames([0, 1])
        assert frames.shape[0] == 2
    # torchcodec not installed at all: Python's own way to make a package absent.
    monkeypatch.setitem(__import__("sys").modules, "torchcodec.decoders", None)
    reader._check_installed.cache_clear()
    out = tmp_path / "run"
    _one_line_error(_run(_stage1(synthetic / "val.csv", out, "--backend", "torchcodec")),
                    "--backend torchcodec needs torchcodec and FFmpeg")
    assert not out.exists()  # refused before the run folder is made, so before any clip
    root = tmp_path / "caches"
    _one_line_error(_run(["extract", "--backbone", TINY_BACKBONE, "--image-size", "32", "--manifest",
                          str(synthetic / "val.csv"), "--cache-root", str(root), "--frames", "2", "--backend",
                          "torchcodec", "--no-progress"]), "apt-get install libavcodec59")
    assert not list(root.glob("*/failures.jsonl"))
    reader._check_installed.cache_clear()


def test_a_torn_metrics_line_is_dropped_on_resume_and_skipped_by_plot(synthetic: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    manifest = synthetic / "val.csv"
    assert _run(_stage1(manifest, out, "--stop-after", "1")).exit_code == 0
    with open(out / "metrics.jsonl", "a") as f:  # a crash in the middle of an append
        f.write('{"kind": "epoch", "epoch": 2, "train_lo')
    figure = tmp_path / "curves.png"
    plotted = _run(["plot", str(out), "--out", str(figure)])
    assert plotted.exit_code == 0 and figure.is_file(), plotted.output
    assert "torn last line" in caplog.text
    resumed = _run(_stage1(manifest, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in read_metrics(out) if r["kind"] == "epoch"] == [1, 2]
    (out / "metrics.jsonl").write_text('{"kind": "epoch"}\nnot json\n{"kind": "epoch"}\n')  # damage, not a crash
    _one_line_error(_run(["plot", str(out), "--out", str(figure)]), "line 2 is not a JSON record")


def test_user_mistakes_are_one_error_line(synthetic: Path, tiny_run: Path, tmp_path: Path) -> None:
    val = synthetic / "val.csv"
    video = val.parent / val.read_text().splitlines()[1].split(",")[0]
    _one_line_error(_run(_stage1(val, tmp_path / "a", "--device", "gpu")), "unknown device 'gpu'")
    _one_line_error(_run(["predict", "--run", str(tiny_run), str(video), "--device", "gpu"]), "unknown device")
    for k in ("-1", "0"):  # 0 would print an empty prediction
        r = _run(["predict", "--run", str(tiny_run), str(video), "--top-k", k])
        assert r.exit_code == 2 and "--top-k" in r.output and "Traceback" not in r.output
    binary = tmp_path / "settings.json"
    binary.write_bytes(bytes(range(256)))
    _one_line_error(_run(["stage1", "--config", str(binary), "--out", str(tmp_path / "b")]), "is not a text file")
    upper = tmp_path / "settings.YAML"  # YAML by its extension, whatever its case
    upper.write_text("frames: 2\nno_such_setting: 1\n")
    _one_line_error(_run(["stage1", "--config", str(upper), "--out", str(tmp_path / "c")]),
                    "unknown key(s) no_such_setting")
    run = tmp_path / "tb-file"  # a file where the TensorBoard folder goes, found on resume
    assert _run(_stage1(val, run, "--stop-after", "1", "--log", "csv")).exit_code == 0
    (run / "tb").write_text("not a folder")
    _one_line_error(_run(_stage1(val, run, "--resume", "--log", "tensorboard")), "tb is a file")


def test_api_mistakes_are_errors_not_wrong_results(synthetic: Path, tiny_run: Path) -> None:
    from sfa_cache import api

    video = str(synthetic / (synthetic / "val.csv").read_text().splitlines()[1].split(",")[0])
    with pytest.raises(SfaError, match="pass \\[path\\]"):  # not one video per character
        api.extract_features(video, run=tiny_run, frames=2)
    with pytest.raises(SfaError, match="unknown device 'gpu'"):
        api.extract_features([video], run=tiny_run, frames=2, device="gpu")
    with pytest.raises(SfaError, match="--top-k must be at least 1"):
        api.predict_video(video, run=tiny_run, top_k=0)


def test_plot_refuses_two_runs_under_one_label(synthetic: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name / "run"  # the same folder name twice: the parent tells them apart
        assert _run(_stage1(synthetic / "val.csv", out, "--epochs", "1", "--log", "none")).exit_code == 0
        runs.append(str(out))
    figure = tmp_path / "f.png"
    assert _run(["plot", *runs, "--out", str(figure)]).exit_code == 0
    _one_line_error(_run(["plot", *runs, "--out", str(figure), "--label", "x", "--label", "x"]),
                    "two runs would share the label 'x'")
    _one_line_error(_run(["plot", runs[0], runs[0], "--out", str(figure)]), "two runs would share the label")


def test_weights_get_the_permissions_of_the_runs_other_files(synthetic: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert _run(_stage1(synthetic / "val.csv", out, "--epochs", "1", "--log", "none")).exit_code == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes
    assert set(modes.values()) == {0o644}, modes
    assert json.loads((out / "config.json").read_text())["kind"] == "stage1"
