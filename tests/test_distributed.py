"""torchrun with 2 gloo processes on the CPU: Stage 1 and Stage 2 under DDP equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import ExtractConfig
from tests.conftest import TINY_BACKBONE


def _cli(*args: str, procs: int = 1) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else []
    return subprocess.run([sys.executable, *launcher, "-m", "sfa_cache.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def _epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line
            and json.loads(line)["kind"] == "epoch"]


def _assert_same_run(one: Path, two: Path) -> None:
    a, b = _epochs(one), _epochs(two)
    assert len(a) == len(b) == 2  # rank 0 alone writes: no duplicated records
    for ra, rb in zip(a, b):
        assert rb["train_clips"] == ra["train_clips"] and rb["val_clips"] == ra["val_clips"]
        for key in ("train_loss", "val_loss", "val_top1"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3, abs=1e-4), key
    wa, wb = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-3, k


@pytest.fixture(scope="module")
def odd_val(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 validation clips: 2 ranks must see 7 + 6, not 7 + 7 with a padded repeat."""
    lines = (synthetic / "val.csv").read_text().splitlines()[:14]
    path = tmp_path_factory.mktemp("val") / "val13.csv"
    path.write_text("\n".join(lines[:1] + [f"{synthetic}/{line}" for line in lines[1:]]) + "\n")
    return path


def test_stage1_ddp_equals_one_process_with_the_same_global_batch(
    synthetic: Path, odd_val: Path, tmp_path: Path
) -> None:
    common = [
        "stage1", "--train-manifest", str(synthetic / "train.csv"), "--val-manifest", str(odd_val), "--backbone",
        TINY_BACKBONE, "--image-size", "32", "--frames", "4", "--temporal-depth", "1", "--epochs", "2", "--optimizer",
        "sgd", "--lr", "0.05", "--warmup-epochs", "1", "--color-jitter-prob", "0", "--num-workers", "0", "--seed", "3",
    ]
    one = _cli(*common, "--batch-size", "4", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli(*common, "--batch-size", "2", "--out", str(tmp_path / "two"), procs=2)
    assert two.returncode == 0, two.stderr[-3000:]
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    assert _epochs(tmp_path / "two")[0]["val_clips"] == 13 and _epochs(tmp_path / "two")[0]["train_clips"] == 28
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    # Resuming with another number of processes changes the global batch: refused unless asked for.
    again = _cli(*common, "--batch-size", "2", "--out", str(tmp_path / "two"), "--resume")
    assert again.returncode == 1 and "trained with 2 process(es), this resume has 1" in again.stderr
    assert "Traceback" not in again.stderr
    allowed = _cli(
        *common, "--batch-size", "2", "--out", str(tmp_path / "two"), "--resume", "--allow-world-size-change"
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]


def test_train_temporal_ddp_equals_one_process(tiny_run: Path, synthetic: Path, odd_val: Path, tmp_path: Path) -> None:
    common_x = dict(model=str(tiny_run), cache_root=str(tmp_path / "caches"), frames=4, num_workers=0, progress=False)
    train = run_extract(ExtractConfig(manifest=str(synthetic / "train.csv"), views=2, **common_x)).cache_dir
    val = run_extract(ExtractConfig(manifest=str(odd_val), mode="eval", **common_x)).cache_dir
    common = ["train-temporal", "--train-cache", str(train), "--val-cache", str(val), "--stage1", str(tiny_run),
              "--frames", "4", "--adapter", "mlp", "--epochs", "2", "--optimizer", "adamw", "--lr", "1e-3",
              "--warmup-epochs", "1", "--num-workers", "0", "--seed", "5", "--no-assemble"]
    one = _cli(*common, "--batch-size", "4", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli(*common, "--batch-size", "2", "--out", str(tmp_path / "two"), procs=2)
    assert two.returncode == 0, two.stderr[-3000:]
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    assert _epochs(tmp_path / "two")[-1]["val_clips"] == 13
