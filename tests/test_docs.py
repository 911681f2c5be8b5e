"""The documentation's commands are real: every `sfa-cache` line in README.md and docs/*.md parses
with the real CLI, and the README's command-by-command pipeline runs as written (at toy size)."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from sfa_cache.cli.main import cli

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)


def sfa_commands(block: str) -> list[list[str]]:
    """The argument lists of every `sfa-cache ...` / `-m sfa_cache.cli ...` command in a bash block."""
    text = block.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        for part in re.split(r"&&|;|\|", line.split(" #")[0]):
            words = shlex.split(part)
            if words and words[0] == "sfa-cache":
                found.append(words[1:])
            elif "sfa_cache.cli" in words:
                found.append(words[words.index("sfa_cache.cli") + 1:])
    return found


def _parse(args: list[str]) -> None:
    """Parse `sfa-cache ARGS` as the CLI would, without running it; paths need not exist here, and
    a `...` (an elision in the text) excuses missing required options."""
    command: click.Command = cli
    name = "sfa-cache"
    args = list(args)
    while isinstance(command, click.Group):
        assert args and args[0] in command.commands, f"no command {args[:1]} in {name}"
        name = args.pop(0)
        command = command.commands[name]
    command = copy.deepcopy(command)
    elided = "..." in args
    for param in command.params:
        if isinstance(param.type, click.Path):
            param.type.exists = False
        param.required = param.required and not elided
    command.make_context(name, [a for a in args if a != "..."])


DOC_COMMANDS = [(f"{path.name}:{i}", args) for path in DOC_FILES for i, block in enumerate(bash_blocks(path))
                for args in sfa_commands(block)]


def test_the_docs_have_commands() -> None:
    assert len(DOC_COMMANDS) > 20 and {"README.md", "stage1.md", "stage2.md", "data.md"} <= {
        where.split(":")[0] for where, _ in DOC_COMMANDS}


@pytest.mark.parametrize("where,args", DOC_COMMANDS, ids=[f"{w}-{' '.join(a[:2])}" for w, a in DOC_COMMANDS])
def test_every_documented_command_parses(where: str, args: list[str]) -> None:
    try:
        _parse(args)
    except click.ClickException as e:
        pytest.fail(f"{where}: sfa-cache {' '.join(args)}: {e.format_message()}")


# The README's walk-through, shrunk: fewer clips and epochs; every other flag as written.
TOY = {
    r"sfa-cache make-synthetic work/synthetic\b":
        "sfa-cache make-synthetic work/synthetic --train-per-class 2 --val-per-class 1 --test-per-class 1",
    r"--epochs 5\b": "--epochs 1",
    r"--epochs 10\b": "--epochs 1",
}


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    (block,) = [b for b in bash_blocks(REPO / "README.md") if "sfa-cache make-synthetic work/synthetic" in b]
    for pattern, toy in TOY.items():
        assert re.search(pattern, block), f"the README walk-through no longer has {pattern!r}: update TOY"
        block = re.sub(pattern, toy, block)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "work/stage2/assembled/eval/val-1x1/metrics.json").is_file()
    # docs/python-api.md's example reads the walk-through's runs and caches: run it as written.
    (example,) = re.findall(r"```python\n(.*?)```", (REPO / "docs/python-api.md").read_text(), flags=re.S)
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(3, 1, 16, 192) float32" in proc.stdout and "'top': [" in proc.stdout
