"""The benchmark drivers run (their figures are not asserted: speed is shown by benchmarks, not tests).

The whole one-shot GPU suite at --quick sizes, every section, runs in .ci/run's install rehearsal
(tools/rehearse_node_install.sh) on an environment built like a GPU node; here its runner."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import gpu_suite


def test_the_suite_keeps_every_sections_report_and_fails_when_one_fails(tmp_path: Path) -> None:
    """A failing section is reported with what it measured before failing and its stderr, the other
    sections keep theirs, the report is written (markdown and JSON), and the exit code is 1."""
    report = tmp_path / "suite.md"
    code = gpu_suite.main(["--device", "cpu", "--quick", "--sections", "step", "fail", "--report", str(report),
                           "--workdir", str(tmp_path / "work"), "--section-timeout", "600"])  # a loaded CI machine
    assert code == 1
    text = report.read_text()
    assert "## Step cost and peak memory" in text and "| frames | batch | baseline | paper | cached |" in text
    assert "## A section that fails on purpose (only when named): FAILED (exit 1)" in text
    assert "measured before the failure" in text and "RuntimeError: this section fails on purpose" in text
    saved = json.loads(report.with_suffix(".json").read_text())
    assert [(s["name"], s["status"]) for s in saved["sections"]] == [("step", "ok"), ("fail", "FAILED (exit 1)")]


def test_a_section_past_the_deadline_is_reported_as_not_run(tmp_path: Path) -> None:
    report = tmp_path / "suite.md"
    assert gpu_suite.main(["--device", "cpu", "--quick", "--sections", "budget", "--deadline", "1", "--report",
                           str(report), "--workdir", str(tmp_path / "work")]) == 1
    assert "NOT RUN (the 1 s deadline was reached)" in report.read_text()


def test_the_tests_section_says_passed_only_when_tests_ran_and_passed() -> None:
    assert gpu_suite.pytest_status(0, "12 passed, 3 skipped in 9.1s").startswith("passed (12 passed")
    assert gpu_suite.pytest_status(0, "17 skipped, 400 deselected in 2.0s").startswith("NOT RUN")
    assert gpu_suite.pytest_status(5, "no tests ran in 0.1s").startswith("NOT RUN")
    assert gpu_suite.pytest_status(1, "1 failed, 11 passed in 9.1s") == "FAILED (exit 1)"
