"""Every command's CUDA path, end to end through the command line on tiny models (GPU-marked:
they skip without CUDA; the GPU suite runs them first). The CPU paths are the rest of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE

from sfa_cache.cli.main import cli
from sfa_cache.run.progress import read_metrics

pytestmark = pytest.mark.gpu


def _ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def gpu_run(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1 on CUDA in bf16, 2 epochs."""
    out = tmp_path_factory.mktemp("gpu") / "stage1"
    _ok("stage1", "--train-manifest", str(synthetic / "train.csv"), "--val-manifest", str(synthetic / "val.csv"),
        "--backbone", TINY_BACKBONE, "--image-size", "32", "--frames", "4", "--temporal-depth", "1", "--epochs", "2",
        "--batch-size", "4", "--num-workers", "2", "--amp", "bf16", "--device", "cuda", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def gpu_caches(gpu_run: Path, synthetic: Path) -> dict[str, Path]:
    """A train cache (2 views) and a val cache, extracted on CUDA in bf16."""
    root = gpu_run.parent / "caches"
    common = ["--model", str(gpu_run), "--cache-root", str(root), "--frames", "8", "--device", "cuda", "--amp", "bf16",
              "--num-workers", "2", "--no-progress"]
    _ok("extract", "--manifest", str(synthetic / "train.csv"), "--views", "2", *common)
    _ok("extract", "--manifest", str(synthetic / "val.csv"), "--mode", "eval", *common)
    return {"train": next(root.glob("train-train-*")), "val": next(root.glob("val-eval-*"))}


def test_stage1_in_bf16_on_cuda(gpu_run: Path) -> None:
    epochs = [r for r in read_metrics(gpu_run) if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(r["peak_mem_mb"] > 0 for r in epochs)
    assert json.loads((gpu_run / "config.json").read_text())["train"]["optim"]["amp"] == "bf16"


@pytest.mark.parametrize("placement", ["gpu", "ram", "off"])
def test_train_temporal_in_each_placement(gpu_run: Path, gpu_caches: dict[str, Path], tmp_path: Path,
                                          placement: str) -> None:
    out = tmp_path / placement
    _ok("train-temporal", "--train-cache", str(gpu_caches["train"]), "--val-cache", str(gpu_caches["val"]),
        "--stage1", str(gpu_run), "--frames", "8", "--epochs", "2", "--batch-size", "4", "--optimizer", "adamw",
        "--lr", "1e-3", "--amp", "bf16", "--device", "cuda", "--cache-in-memory", placement, "--num-workers", "2",
        "--out", str(out))
    assert (out / "assembled" / "model.safetensors").is_file()
    assert len([r for r in read_metrics(out) if r["kind"] == "epoch"]) == 2


def test_evaluate_predict_and_parity_on_cuda(gpu_run: Path, gpu_caches: dict[str, Path], synthetic: Path) -> None:
    metrics = json.loads(_ok("evaluate", "--run", str(gpu_run), "--manifest", str(synthetic / "val.csv"), "--device",
                             "cuda", "--amp", "bf16", "--clips", "2", "--crops", "3"))
    assert metrics["videos"] == 14 and 0 <= metrics["top1"] <= 100
    video = synthetic / (synthetic / "val.csv").read_text().splitlines()[1].split(",")[0]
    assert json.loads(_ok("predict", "--run", str(gpu_run), str(video), "--device", "cuda", "--json"))["top"]
    assert "ok:" in _ok("cache", "verify", str(gpu_caches["train"]), "--parity", "2", "--device", "cuda")


def test_ablate_with_a_gpu_store(gpu_run: Path, gpu_caches: dict[str, Path], tmp_path: Path) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"base": {"train_cache": str(gpu_caches["train"]), "val_cache": str(gpu_caches["val"]),
                                         "stage1": str(gpu_run), "frames": 8, "epochs": 1, "batch_size": 4,
                                         "device": "cuda", "cache_in_memory": "gpu", "num_workers": 0},
                                "product": {"adapter": ["mlp", "residual"]}}))
    _ok("ablate", "--grid", str(grid), "--out", str(tmp_path / "ablate"))
    rows = (tmp_path / "ablate" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in row for row in rows[1:]), rows


def test_demo_amp_auto_on_a_tiny_config(tmp_path: Path) -> None:
    _ok("demo", "--workdir", str(tmp_path / "demo"), "--frames", "16", "--frames-sweep", "8", "--stage1-max-epochs",
        "2", "--patience", "1", "--baseline-max-epochs", "2", "--stage2-max-epochs", "2", "--train-per-class", "2",
        "--val-per-class", "1", "--test-per-class", "1", "--pretrain-steps", "10", "--num-workers", "0",
        "--restarts", "0", "--device", "cuda")
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["amp"] == "bf16"  # Ampere and later


def test_torchrun_one_process_on_nccl(gpu_caches: dict[str, Path], gpu_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
         "sfa_cache.cli", "train-temporal", "--train-cache", str(gpu_caches["train"]), "--stage1", str(gpu_run),
         "--frames", "8", "--epochs", "1", "--batch-size", "4", "--device", "cuda", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "NCCL_DEBUG": "INFO"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 1 and (out / "model.safetensors").is_file()
    assert "NCCL INFO" in proc.stdout + proc.stderr  # the process group ran on NCCL, not gloo
