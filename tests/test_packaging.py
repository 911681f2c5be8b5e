"""The package as a user gets it: a wheel, installed NON-editable, run from outside the source tree.

The suite itself runs on an editable install, which would hide a module the wheel forgot (the
`sfa_cache/cost/` package once was: `sfa-cache` died at start-up for anyone who installed it from
a wheel). So one module-scoped fixture builds the wheel from a copy of the source, installs it
into a throw-away virtual environment (no network: the dependencies already installed here are
put on its path, without the editable install's hooks), and every test below runs that install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Folders of the source that the wheel must carry, and the package each installs as.
SOURCE_PACKAGES = {"sfa_cache": "sfa_cache", "pipelines": "sfa_cache/pipelines", "cli": "sfa_cache/cli"}
NOT_BUILT = ("__pycache__", "*.egg-info", "build", "dist", ".venv", ".git", "tests", "benchmarks", "runs", "work")


@dataclass
class Install:
    wheel: Path
    venv: Path
    site: Path
    cwd: Path  # outside the source tree, so nothing there can shadow the install

    def run(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(args, cwd=cwd or self.cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_BUILT))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(base / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (base / "dist").glob("sfa_cache-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies installed here, as plain path entries: the .pth files there (the editable
    # install's import hook among them) are not processed for entries added this way.
    here = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_dependencies.pth").write_text("".join(f"{p}\n" for p in here))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    cwd = base / "elsewhere"
    cwd.mkdir()
    return Install(wheel, venv, site, cwd)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_carries_every_module(install: Install) -> None:
    names = set(zipfile.ZipFile(install.wheel).namelist())
    for folder, package in SOURCE_PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"{package}/{path.relative_to(REPO / folder).as_posix()}" in names, path
    assert "sfa_cache/py.typed" in names
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"sfa_cache"}, top
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names


def test_installed_not_editable(install: Install) -> None:
    where = _ok(
        install.run("python", "-c", "import sfa_cache, sfa_cache.cli.main as m; print(sfa_cache.__file__, m.__file__)")
    )
    assert all(Path(p).is_relative_to(install.site) for p in where.split()), where
    assert not (install.site / "cli").exists() and not (install.site / "pipelines").exists()


def test_every_command_starts(install: Install) -> None:
    assert "stage1" in _ok(install.run("sfa-cache", "--help"))
    assert "train-temporal" in _ok(install.run("python", "-m", "sfa_cache", "--help"))
    assert "0.1.0" in _ok(install.run("sfa-cache", "--version"))
    listing = _ok(install.run("python", "-c", (
        "import click; from sfa_cache.cli.main import cli\n"
        "def walk(group, path):\n"
        "    for name, cmd in group.commands.items():\n"
        "        print(' '.join(path + [name]))\n"
        "        if isinstance(cmd, click.Group): walk(cmd, path + [name])\n"
        "walk(cli, [])")))
    commands = listing.split("\n")[:-1]
    assert {"stage1", "extract", "train-temporal", "evaluate", "predict", "ablate", "demo", "plan", "cache verify",
            "convert kinetics", "pack-wds", "make-synthetic", "assemble"} <= set(commands), commands
    for command in commands:
        assert "Usage: sfa-cache " in _ok(install.run("sfa-cache", *command.split(), "--help")), command


def test_installed_package_trains(install: Install) -> None:
    _ok(install.run("sfa-cache", "make-synthetic", "data", "--train-per-class", "2", "--val-per-class", "1",
                    "--num-frames", "24", "--size", "32"))
    _ok(install.run("sfa-cache", "stage1", "--train-manifest", "data/train.csv", "--val-manifest", "data/val.csv",
                    "--backbone", "vit_tiny_patch16_224", "--image-size", "32", "--frames", "4", "--epochs", "1",
                    "--batch-size", "4", "--num-workers", "0", "--temporal-depth", "1", "--out", "run", timeout=300))
    assert (install.cwd / "run" / "model.safetensors").is_file()
    assert (install.cwd / "run" / "config.json").is_file()


def test_a_checkout_runs_its_tools_over_a_normal_install(install: Install, tmp_path: Path) -> None:
    """From a checkout's root `./sfa_cache` shadows the installed package and has no pipelines/ or
    cli/ of its own: they are mapped from the checkout, so the GPU suite and pytest run there."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns("__pycache__", ".venv", ".git", "*.egg-info"))
    where = _ok(install.run("python", "-c", "import sfa_cache, sfa_cache.pipelines.stage1 as s, sfa_cache.cli.main "
                            "as m; print(sfa_cache.__file__, s.__file__, m.__file__)", cwd=checkout))
    assert all(Path(p).is_relative_to(checkout) for p in where.split()), where
    assert "--sections" in _ok(install.run("python", "-m", "benchmarks.gpu_suite", "--help", cwd=checkout))


def test_the_wheelhouse_asks_for_the_nodes_platform_and_never_torch() -> None:
    """tools/wheelhouse.py (its download is exercised by .ci/run's install rehearsal)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wheelhouse", REPO / "tools" / "wheelhouse.py")
    wheelhouse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheelhouse)
    tags = wheelhouse.platform_tags("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and {"manylinux2014_x86_64", "manylinux2010_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags  # nothing newer than the node's glibc
    wanted = [line.split(">")[0].split("<")[0].strip().lower() for line in wheelhouse.NODE_PACKAGES.read_text()
              .splitlines() if line.strip() and not line.startswith("#")]
    assert {"decord", "av", "zarr", "webdataset"} <= set(wanted) and not {"torch", "torchvision"} & set(wanted)
    (download,) = [c for c in wheelhouse.commands(Path("/tmp/w"), "3.12", "manylinux_2_28_x86_64") if "download" in c]
    assert "--only-binary=:all:" in download and download[download.index("--python-version") + 1] == "3.12"
