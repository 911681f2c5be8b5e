"""`sfa-cache demo` end to end at a toy size: every phase, the table, the figure, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfa_cache.cli.main import cli

ARGS = ["--frames", "16", "--epochs", "1", "--stage2-epochs", "1", "--train-per-class", "2", "--val-per-class", "1",
        "--pretrain-steps", "10", "--num-workers", "0"]


@pytest.mark.slow
def test_demo_runs_every_phase_reports_and_reuses(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--workdir", str(work), *ARGS])
    assert r.exit_code == 0, r.output
    rows = [line for line in (work / "results.md").read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| Stage 1 alone (8 frames)", "| SFA: Stage 1 + cache + Stage 2 (F frames)",
                                                         "| naive: frozen, no adapter, temporal from scratch (F)",
                                                         "| baseline: whole ViViT-FE at F frames"]
    assert rows[-1].rstrip().endswith("| 1.00x |")  # the baseline is the unit of cost
    assert (work / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    phases = json.loads((work / "phases.json").read_text())
    assert list(phases) == ["data", "image", "stage1", "extract", "sfa", "naive", "baseline", "evaluate"]
    assert all(p["seconds"] > 0 and p["peak_mem_mb"] > 0 for p in phases.values())
    assert (work / "sfa" / "assembled" / "model.safetensors").is_file()
    # The demo's model settings reach every run: Stage 1, the baseline and the naive ablation alike.
    configs = {run: json.loads((work / run / "config.json").read_text()) for run in ("stage1", "baseline", "sfa", "naive")}
    for run, config in configs.items():
        assert config["model"]["temporal"]["depth"] == 2 and config["model"]["temporal"]["pos_embed_std"] == 1.0, run
    assert configs["stage1"]["train"]["color_jitter_prob"] == 0.0 and configs["baseline"]["train"]["frames"] == 16
    assert configs["sfa"]["model"]["adapter"]["kind"] == "mlp" and configs["naive"]["model"]["adapter"]["kind"] == "none"
    # A rerun reuses every phase and reports the same table.
    again = CliRunner().invoke(cli, ["demo", "--workdir", str(work), *ARGS])
    assert again.exit_code == 0 and again.output == r.output
    assert json.loads((work / "phases.json").read_text()) == phases
    other = CliRunner().invoke(cli, ["demo", "--workdir", str(work), *ARGS[:-2], "--num-workers", "1", "--epochs", "2"])
    assert other.exit_code == 1 and "holds a demo run with other settings" in other.output
