"""`--help` is instant: no command's help loads the ML stack (torch, timm, zarr, h5py, decord, PyAV).

The help texts are built from torch-free config dataclasses (pipelines/job_configs/); each
command imports its pipeline only when it runs. A fresh interpreter is the only honest place to
look at `sys.modules`: this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "zarr", "h5py", "decord", "av", "webdataset", "safetensors", "torchvision")

SCRIPT = f"""
import json, sys
import click
from click.testing import CliRunner
from sfa_cache.cli.main import cli

def walk(group, path):
    for name, command in group.commands.items():
        yield path + [name]
        if isinstance(command, click.Group):
            yield from walk(command, path + [name])

runner = CliRunner()
shown = []
for path in [[]] + list(walk(cli, [])):
    result = runner.invoke(cli, path + ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)
    shown.append(" ".join(path))
print(json.dumps({{"shown": shown, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_no_help_imports_the_ml_stack() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"", "stage1", "extract", "train-temporal", "evaluate", "demo", "plan", "cache verify"} <= set(out["shown"])
    assert out["heavy"] == [], f"--help imported {out['heavy']}"


def test_module_entry_points_need_no_ml_stack_for_help() -> None:
    """`python -m sfa_cache` and `python -m sfa_cache.cli` (what torchrun launches) start the same CLI."""
    for module in ("sfa_cache", "sfa_cache.cli"):
        code = (
            "import runpy, sys; sys.argv = ['x', 'extract', '--help']\n"
            f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
            f"except SystemExit as e:\n    assert not e.code, e.code\nprint([m for m in {HEAVY!r} if m in sys.modules])"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "Usage: sfa-cache extract" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
