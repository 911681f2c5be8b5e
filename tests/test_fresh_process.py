"""Phases and ablation entries run in spawned processes; a killed parent must not leave them running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = '''
import os, sys, time
import torch
from sfa_cache.fresh_process import run_in_fresh_process

def sleeper(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(300)

if __name__ == "__main__":
    run_in_fresh_process(sleeper, sys.argv[1], device=torch.device("cpu"), name="sleeper")
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead: it only waits to be reaped
        return f.read().split(") ")[-1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_phase_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    script, pid_file = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists():
            assert parent.poll() is None and time.monotonic() < deadline, "the phase never started"
            time.sleep(0.2)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGTERM)  # no cleanup runs in the parent: the default handler
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the spawned phase outlived its killed parent"
    finally:
        parent.kill()
