"""The cost tools: training regimes, the memory model, the frame planner, the benchmark scripts."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sfa_cache.cli.main import cli
from sfa_cache.cost.frame_planner import largest_fitting, measure_step_memory
from sfa_cache.cost.memory_model import estimate_step_memory, saved_activation_bytes
from sfa_cache.cost.regimes import TrainStep, build_regime_model, regime_config, regime_forward, regime_input
from sfa_cache.errors import SfaError
from sfa_cache.report import parse_size
from sfa_cache.runtime import autocast
from tests.conftest import TINY_BACKBONE

REPO = Path(__file__).resolve().parents[1]


def counted_saved_bytes(regime: str, backbone: str, frames: int, batch: int, amp: str, image_size: int) -> int:
    """Bytes of the distinct tensors autograd saves in one forward (parameters and the input excluded)."""
    cfg = regime_config(backbone, frames, image_size=image_size, num_classes=10)
    cpu = torch.device("cpu")
    model = build_regime_model(regime, cfg, cpu)
    x = regime_input(regime, cfg, batch, cpu)
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(cpu, amp):
        regime_forward(regime, model, x)
    return sum(seen.values())


@pytest.mark.parametrize("regime", ["baseline", "paper", "cached"])
@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize(
    "backbone,image_size,frames,batch", [(TINY_BACKBONE, 64, 4, 1), ("vit_small_patch16_224", 32, 8, 2)]
)
def test_memory_model_matches_what_autograd_saves(regime, amp, backbone, image_size, frames, batch):
    counted = counted_saved_bytes(regime, backbone, frames, batch, amp, image_size)
    cfg = regime_config(backbone, frames, image_size=image_size, num_classes=10)
    model = sum(saved_activation_bytes(regime, cfg, batch, amp).values())
    if amp != "none":  # autocast keeps a low-precision copy of every trainable weight it used
        model += estimate_step_memory(regime, cfg, batch=batch, amp=amp).parts["autocast weight copies"]
    assert model == pytest.approx(counted, rel=0.05)


def test_memory_model_scaling():
    def total(regime, frames=32, size=224, backbone="vit_base_patch16_224"):
        return estimate_step_memory(regime, regime_config(backbone, frames, image_size=size)).total

    # The baseline keeps every frame's spatial activations: linear in frames, and far above Stage 2.
    grow = total("baseline", 64) - total("baseline", 32)
    assert total("baseline", 96) - total("baseline", 64) == pytest.approx(grow, rel=0.01)
    assert total("baseline") > 3 * total("paper") > 3 * total("cached")
    # Cached Stage 2 never builds the spatial ViT: the image size does not enter, the width does.
    assert total("cached", size=224) == total("cached", size=384)
    assert total("cached", backbone="vit_large_patch16_224") > total("cached")
    # The paper's Stage 2 holds the frozen ViT's weights (fp32) but not its gradients or activations.
    paper = estimate_step_memory("paper", regime_config("vit_base_patch16_224", 32))
    assert "spatial activations" not in paper.parts and paper.parts["weights (fp32)"] > 86e6 * 4


def test_regimes_train_what_they_should():
    cfg = regime_config(TINY_BACKBONE, 4, image_size=32, num_classes=5)
    cpu = torch.device("cpu")
    for regime, spatial_moves in (("baseline", True), ("paper", False)):
        torch.manual_seed(0)
        step = TrainStep(regime, cfg, 2, cpu)
        before = {k: v.clone() for k, v in step.model.state_dict().items()}
        for _ in range(2):  # the head starts at zero, so the first step moves only the head
            step()
        after = step.model.state_dict()
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert any(k.startswith("temporal.") for k in moved) and any(k.startswith("adapter.") for k in moved)
        assert any(k.startswith("spatial.") for k in moved) == spatial_moves, regime
    cached = build_regime_model("cached", cfg, cpu)
    assert cached.spatial is None
    assert regime_forward("cached", cached, regime_input("cached", cfg, 3, cpu)).shape == (3, 5)


def test_largest_fitting_search():
    calls = []

    def peak(frames: int) -> float:
        calls.append(frames)
        return 100.0 * frames

    assert largest_fitting(peak, budget=100 * 100, step=8, cap=4096) == (96, 9600.0)
    assert len(calls) < 16  # doubling then bisection, not a scan
    assert largest_fitting(peak, budget=10**9, step=8, cap=100) == (96, 9600.0)  # cap rounded down to a multiple
    assert largest_fitting(peak, budget=10**9, step=8, cap=4096) == (4096, 409600.0)
    assert largest_fitting(peak, budget=799, step=8) == (0, math.inf)
    assert largest_fitting(lambda f: math.inf if f > 40 else 1.0, budget=10, step=8) == (40, 1.0)  # OOM = over


def test_parse_size():
    assert parse_size("12GiB") == 12 * 2**30
    assert parse_size("12 GB") == 12 * 10**9
    assert parse_size("800MiB") == 800 * 2**20
    assert parse_size("1.5g") == 1_500_000_000
    for bad in ("12XB", "", "GiB", "-1GiB", "0GiB"):
        with pytest.raises(SfaError):
            parse_size(bad)


def test_plan_command_estimates_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["plan", "--budget", "1GiB", "--backbone", TINY_BACKBONE, "--image-size", "64"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "ESTIMATED (no CUDA device here)" in r.output and "| vit_tiny_patch16_224 | baseline" in r.output
    rows = json.loads(CliRunner().invoke(cli, args + ["--json"]).output)
    assert [r["regime"] for r in rows] == ["baseline", "paper", "cached"] and not any(r["measured"] for r in rows)
    base = rows[0]
    assert 0 < base["max_frames"] < rows[1]["max_frames"] <= rows[2]["max_frames"]

    def est(frames: int) -> int:
        return estimate_step_memory("baseline", regime_config(TINY_BACKBONE, frames, image_size=64)).total

    assert est(base["max_frames"]) == base["peak_bytes"] <= 2**30 < est(base["max_frames"] + 8)
    for bad, message in ((["--budget", "12XB"], "cannot read size"), (["--backbone", "nope"], "unknown backbone")):
        r = CliRunner().invoke(cli, ["plan", *bad])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output


def _run_benchmark(*args: str, cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_step_cost_and_recipe_cost_run(tmp_path):
    """The benchmark scripts run end to end at a toy size (their numbers are for docs/benchmarks.md)."""
    out = _run_benchmark("benchmarks.step_cost", "--backbones", TINY_BACKBONE, "--frames", "4", "--image-size", "32",
                         "--workdir", str(tmp_path), cwd=REPO)
    row = next(line for line in out.splitlines() if line.startswith("| vit_tiny_patch16_224 | 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(float(c) > 0 for c in cells[2:5]) and cells[5].endswith("x") and cells[6].endswith("x")
    assert list((tmp_path / "step-cost-cache-192d-128f").glob("*/cache.json"))  # features came from a real cache
    out = _run_benchmark("benchmarks.recipe_cost", "--backbone", TINY_BACKBONE, "--frames", "16", "--image-size", "32",
                         "--epochs", "2", "--workdir", str(tmp_path), cwd=REPO)
    assert "| 16 |" in out and "x) |" in out
    out = _run_benchmark("benchmarks.frames_budget", "--budget", "2GiB", "--backbones", TINY_BACKBONE,
                         "--device", "cpu", cwd=REPO)
    assert "no GPU: not measured" in out


@pytest.mark.gpu
def test_memory_model_against_cuda():
    """On a GPU the model should be near torch.cuda.max_memory_allocated (fragmentation aside)."""
    cuda = torch.device("cuda")
    for regime in ("baseline", "paper", "cached"):
        measured = measure_step_memory(regime, "vit_base_patch16_224", 32, cuda)
        estimate = estimate_step_memory(regime, regime_config("vit_base_patch16_224", 32)).total
        assert estimate == pytest.approx(measured, rel=0.25), regime


def test_cached_estimate_needs_no_spatial_model() -> None:
    """Stage 2 on a cache of features computed elsewhere (no timm backbone name) still gets its step
    estimate, equal to that of the same temporal model over a real backbone of the same width."""
    real = regime_config("vit_tiny_patch16_224", 32)
    external = dataclasses.replace(real, spatial=dataclasses.replace(real.spatial, backbone="external"))
    assert estimate_step_memory("cached", external).total == estimate_step_memory("cached", real).total > 0
    with pytest.raises(SfaError, match="unknown backbone"):  # the other regimes run the spatial ViT
        estimate_step_memory("paper", external)
