"""How long `sfa-cache --help` takes to appear, against a bare Python start and an import of torch + timm.

Each command line is started `--repeat` times in a fresh process; the median wall time is
reported, and each figure as a ratio to the bare interpreter start measured in the same run.

    python -m benchmarks.cli_start --repeat 9
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine, table

SFA = [str(Path(sys.executable).with_name("sfa-cache"))]
CASES = {
    "python -c pass (reference)": [sys.executable, "-c", "pass"],
    "sfa-cache --help": SFA + ["--help"],
    "sfa-cache stage1 --help": SFA + ["stage1", "--help"],
    "sfa-cache extract --help": SFA + ["extract", "--help"],
    "python -c 'import torch, timm' (what --help once paid)": [sys.executable, "-c", "import torch, timm"],
}


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    for argv in CASES.values():  # warm the file cache once
        wall(argv)
    medians = {name: statistics.median(wall(argv) for _ in range(args.repeat)) for name, argv in CASES.items()}
    ref = medians["python -c pass (reference)"]
    print(machine())
    print(table(["command", f"median of {args.repeat} (s)", "vs bare python"],
                [[name, f"{t:.3f}", f"{t / ref:.1f}x"] for name, t in medians.items()]))


if __name__ == "__main__":
    main()
