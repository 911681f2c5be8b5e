"""Experiment tracking (`--log`): TensorBoard event files read back, the CSV, resume, bad values,
and timestamps on log lines. Real runs of the real command line."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE

from sfa_cache.cli.main import cli


def _stage1_args(synthetic: Path, out: Path, *extra: str) -> list[str]:
    return ["stage1", "--train-manifest", str(synthetic / "train.csv"), "--val-manifest", str(synthetic / "val.csv"),
            "--out", str(out), "--backbone", TINY_BACKBONE, "--image-size", "32", "--frames", "2",
            "--temporal-depth", "1", "--epochs", "2", "--batch-size", "8", "--num-workers", "0", "--log-every", "1",
            *extra]


def _scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_and_csv_by_default_read_back_and_timestamped_logs(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "sfa_cache", *_stage1_args(synthetic, out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logged = [line for line in proc.stderr.splitlines() if "loss" in line and "val top-1" in line]
    assert len(logged) == 2 and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in logged)
    scalars = _scalars(out / "tb")
    top1 = scalars["val/top1"]
    rows = _csv_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2] and len(top1) == 2
    assert [v for _, v in top1] == pytest.approx([float(r["val_top1"]) for r in rows])  # the same numbers
    assert [s for s, _ in top1] == [int(r["step"]) for r in rows]  # at the optimiser step
    for tag in ("val/top5", "val/loss", "epoch/train_loss", "epoch/peak_mem_mb", "epoch/lr", "train_step/loss",
                "train_step/lr", "train_step/clips_per_s"):
        assert tag in scalars, sorted(scalars)
    steps = [s for s, _ in scalars["train_step/loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == int(rows[-1]["step"])  # one point per optimiser step
    hparams = _scalars(out / "tb" / "hparams")  # add_hparams' own run: the final metrics beside the config
    assert hparams["hparam/val_top1"][-1][1] == pytest.approx(float(rows[-1]["val_top1"]))


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_a_resumed_run_keeps_one_point_per_step(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = CliRunner().invoke(cli, _stage1_args(synthetic, out, "--stop-after", "1"), catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert len(_csv_rows(out / "metrics.csv")) == 1
    again = CliRunner().invoke(cli, _stage1_args(synthetic, out, "--resume"), catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert [int(r["epoch"]) for r in _csv_rows(out / "metrics.csv")] == [1, 2]
    steps = [s for s, _ in _scalars(out / "tb")["val/top1"]]
    assert len(steps) == 2 and steps == sorted(set(steps))


def test_log_none_and_bad_values(synthetic: Path, tmp_path: Path) -> None:
    quiet = CliRunner().invoke(cli, _stage1_args(synthetic, tmp_path / "q", "--log", "none", "--epochs", "1"),
                               catch_exceptions=False)
    assert quiet.exit_code == 0, quiet.output
    assert not (tmp_path / "q" / "tb").exists() and not (tmp_path / "q" / "metrics.csv").exists()
    assert (tmp_path / "q" / "metrics.jsonl").is_file()  # the run's own record is always written
    bad = CliRunner().invoke(cli, _stage1_args(synthetic, tmp_path / "b", "--log", "tensorbored"))
    assert bad.exit_code != 0 and "--log takes auto, none or a comma list" in bad.output
    assert not (tmp_path / "b").exists()


def test_an_uninstalled_tracker_is_refused_before_anything_is_written(synthetic: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # Python's own way to make a package absent: import fails
    missing = CliRunner().invoke(cli, _stage1_args(synthetic, tmp_path / "w", "--log", "csv,wandb"))
    assert missing.exit_code != 0 and "needs the wandb package" in missing.output
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline(synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, _stage1_args(synthetic, out, "--log", "wandb", "--epochs", "1"),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert list((out / "wandb").glob("offline-run-*"))
