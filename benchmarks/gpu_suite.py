"""The one-shot GPU check: CUDA tests and the figures docs/benchmarks.md needs, as one report.

    python -m benchmarks.gpu_suite                                 # on one H100 / H200: at most about 7 min
    python -m benchmarks.gpu_suite --device cpu --quick            # the same code path on a CPU, tiny sizes
    python -m benchmarks.gpu_suite --sections budget step          # some sections only

Built for a short allocation on a node without internet (install: README, "A GPU node without
internet"), where a run must not lose what it measured:

- each section runs in its own process under its own timeout, inside a total deadline
  (`--deadline`, default 420 s); a section that fails, hangs or crashes the process (a CUDA
  fault) is reported with its stderr's last lines and the others go on;
- the report (`--report`, markdown, and the same as JSON beside it) is rewritten after every
  section, and a section reports each row as it is measured;
- the exit code is non-zero when any section failed, timed out or was not reached.

Sections, in order: `tests` (`pytest -m gpu -v`, output kept), then those of
benchmarks/gpu_sections.py: `budget`, `step`, `extract`, `input`. `--quick` shrinks every size
so that the whole path runs in a minute or two on a CPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 420.0
TESTS_TIMEOUT_S = 150.0
KEEP_LINES = 60  # of a failed section's stderr, and of the tests' output


@dataclass
class Outcome:
    name: str
    title: str
    status: str  # ok | FAILED (exit N) | TIMED OUT after N s | NOT RUN (...) | ...
    seconds: float
    lines: list[str]
    required: bool = True  # False: the GPU tests on a CPU, which has none to run

    @property
    def ok(self) -> bool:
        return self.status == "ok" or self.status.startswith("passed") or not self.required


def pytest_status(returncode: int, output: str) -> str:
    """'passed' only when tests ran and none failed; every test skipped, or none collected, is
    'NOT RUN' (a CPU machine, a missing marker), never passed."""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", output)}
    if returncode == 0 and counts.get("passed", 0) > 0:
        return f"passed ({counts['passed']} passed, {counts.get('skipped', 0)} skipped)"
    if returncode in (0, 5):  # 5: none collected
        return f"NOT RUN ({counts.get('skipped', 0)} skipped, none passed)"
    return f"FAILED (exit {returncode})"


def _tail(text: str, n: int = KEEP_LINES) -> list[str]:
    return text.strip().splitlines()[-n:]


def run_tests(timeout: float, device: str) -> Outcome:
    """The CUDA-marked tests, verbose, in their own process; the end of their output kept. On a
    CPU they all skip: reported as not run, which does not fail the suite there."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "tests"]
    title = "CUDA-marked tests (`pytest -m gpu -v`)"
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return Outcome("tests", title, f"TIMED OUT after {timeout:.0f} s", time.perf_counter() - t0,
                       ["```", *_tail(out), "```"])
    status = pytest_status(proc.returncode, proc.stdout)
    return Outcome("tests", title, status, time.perf_counter() - t0,
                   ["```", *_tail(proc.stdout + proc.stderr, 4 * KEEP_LINES), "```"],
                   required=not (device == "cpu" and status.startswith("NOT RUN")))


def run_section(name: str, title: str, timeout: float, args: argparse.Namespace) -> Outcome:
    """One section of gpu_sections in a child process; what it emitted survives a failure or timeout."""
    result = args.workdir / f"section-{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.gpu_suite", "--child", name, "--device", args.device,
           "--workdir", str(args.workdir), "--result", str(result)] + (["--quick"] if args.quick else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        stderr = proc.stderr
    except subprocess.TimeoutExpired as e:
        status = f"TIMED OUT after {timeout:.0f} s"
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    lines = json.loads(result.read_text())["lines"] if result.is_file() else []
    if status != "ok":
        lines = [*lines, "", "stderr (last lines):", "", "```", *_tail(stderr), "```"]
    return Outcome(name, title, status, time.perf_counter() - t0, lines)


def write_report(path: Path, header: list[str], outcomes: list[Outcome], pending: list[str]) -> None:
    """The markdown report and its JSON twin, rewritten whole (atomically) after every section."""
    from sfa_cache.atomic import atomic_write_json, atomic_write_text

    lines = list(header)
    for o in outcomes:
        lines += [f"## {o.title}: {o.status} ({o.seconds:.0f} s)", "", *o.lines, ""]
    if pending:
        lines += [f"Not run yet: {', '.join(pending)}", ""]
    failed = [o.name for o in outcomes if not o.ok]
    lines.append(f"Sections: {len(outcomes)} run, {len(failed)} not ok{': ' + ', '.join(failed) if failed else ''}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_json(path.with_suffix(".json"), {"header": header, "sections": [asdict(o) for o in outcomes],
                                                  "pending": pending})


def _header(args: argparse.Namespace, argv: list[str]) -> list[str]:
    try:
        from benchmarks.common import machine

        where = machine()
    except Exception as e:  # the header must not cost the report: say what failed instead
        where = f"unknown ({type(e).__name__}: {e})"
    return [f"# sfa-cache GPU suite{' (--quick: sizes too small to mean anything)' if args.quick else ''}", "",
            f"Machine: {where}", "", f"Command: `python -m benchmarks.gpu_suite {' '.join(argv)}`", ""]


def child(args: argparse.Namespace) -> None:
    """Run one section in this process (the runner's child)."""
    import torch

    from benchmarks.gpu_sections import SECTIONS, Section, quick_sizes

    device = torch.device(args.device)
    amp = "bf16" if device.type == "cuda" else "none"
    args.workdir.mkdir(parents=True, exist_ok=True)
    _, body, _ = SECTIONS[args.child]
    body(Section(quick_sizes(args.quick), device, amp, args.workdir, args.result))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.gpu_sections import DEFAULT_ORDER, SECTIONS

    argv = sys.argv[1:] if argv is None else argv
    order = ["tests", *DEFAULT_ORDER]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path, not the hardware")
    p.add_argument("--report", type=Path, default=Path("gpu_suite.md"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-gpu-suite"))
    p.add_argument("--sections", nargs="+", choices=[*order, "fail"], default=order,
                   help=f"which sections, run in the suite's order ({', '.join(order)}; 'fail' fails on purpose)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for the whole suite")
    p.add_argument("--section-timeout", type=float, help="seconds for every section [default: each its own]")
    p.add_argument("--child", choices=list(SECTIONS), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        child(args)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    t_end = time.perf_counter() + args.deadline
    header = _header(args, argv)
    chosen = [name for name in [*order, "fail"] if name in args.sections]
    outcomes: list[Outcome] = []
    for i, name in enumerate(chosen):
        left = t_end - time.perf_counter()
        limit = args.section_timeout or (TESTS_TIMEOUT_S if name == "tests" else SECTIONS[name][2])
        print(f"== {name} (up to {min(limit, left):.0f} s)", flush=True)
        if left < 5:
            outcome = Outcome(name, SECTIONS[name][0] if name in SECTIONS else "CUDA-marked tests",
                              f"NOT RUN (the {args.deadline:.0f} s deadline was reached)", 0.0, [])
        else:
            try:
                outcome = run_tests(min(limit, left), args.device) if name == "tests" else run_section(
                    name, SECTIONS[name][0], min(limit, left), args)
            except Exception:  # the runner itself: report it and go on
                outcome = Outcome(name, name, "FAILED (runner)", 0.0, ["```", *_tail(traceback.format_exc()), "```"])
        outcomes.append(outcome)
        print(f"{outcome.status}\n" + "\n".join(outcome.lines), flush=True)
        write_report(args.report, header, outcomes, chosen[i + 1:])
    print(f"report: {args.report} (and {args.report.with_suffix('.json')})")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
