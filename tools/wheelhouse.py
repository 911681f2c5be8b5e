"""Write a wheelhouse for a GPU node without internet that runs a stock PyTorch image.

On a connected machine, from a checkout (pip reaches PyPI there):

    python tools/wheelhouse.py wheelhouse/ --python 3.12 --platform manylinux_2_28_x86_64

It writes the project's wheel and every package the node lacks (tools/node-packages.txt, with
their dependencies) for that Python and platform, never torch or its CUDA libraries. Copy the
folder to the node and install from it alone; the node's torch stays as it is:

    pip install --no-index --find-links wheelhouse/ sfa-cache pytest-timeout

`--platform` takes a manylinux tag; wheels for the older manylinux tags it includes are accepted
too (a manylinux2014 wheel runs on a manylinux_2_28 system).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE_PACKAGES = Path(__file__).with_name("node-packages.txt")
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}  # the old names of glibc 2.17, 2.12, 2.5


def platform_tags(platform: str) -> list[str]:
    """A manylinux tag and every older one a system of that glibc also runs, newest first."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not match:
        return [platform]
    glibc, arch = int(match.group(1)), match.group(2)
    tags = []
    for minor in range(glibc, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in LEGACY:
            tags.append(f"{LEGACY[minor]}_{arch}")
    return tags


def commands(out: Path, python: str, platform: str) -> list[list[str]]:
    """The pip calls: the project's wheel (pure Python), then the node's missing packages."""
    pip = [sys.executable, "-m", "pip"]
    download = [*pip, "download", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                "-d", str(out), "-r", str(NODE_PACKAGES)]
    for tag in platform_tags(platform):
        download += ["--platform", tag]
    return [[*pip, "wheel", "--no-deps", "-w", str(out), str(REPO)], download]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the wheelhouse folder (created)")
    p.add_argument("--python", default="3.12", choices=PYTHONS, help="the node's Python version")
    p.add_argument("--platform", default="manylinux_2_28_x86_64", help="the node's platform tag")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for cmd in commands(args.out, args.python, args.platform):
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"error: {cmd[3]} failed (see above)", file=sys.stderr)
            return 1
    wheels = sorted(w.name for w in args.out.glob("*.whl"))
    torch_like = [w for w in wheels if w.startswith(("torch-", "nvidia_", "triton-"))]
    if torch_like:  # a node-package that started to depend on torch: it must not replace the node's
        print(f"error: the wheelhouse would bring {', '.join(torch_like)}; the node's torch must stay",
              file=sys.stderr)
        return 1
    print(f"{len(wheels)} wheels in {args.out}; on the node:\n"
          f"  pip install --no-index --find-links {args.out} sfa-cache pytest-timeout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
