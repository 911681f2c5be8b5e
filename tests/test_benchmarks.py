"""The benchmark drivers run (their figures are not asserted: speed is shown by benchmarks, not tests)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import gpu_suite


def test_gpu_suite_runs_end_to_end_on_a_cpu_in_quick_mode(tmp_path: Path) -> None:
    """The one-shot GPU check must work the first time a GPU is lent: every section runs here on
    the CPU at tiny sizes and lands in the report without a failure."""
    report = tmp_path / "suite.md"
    gpu_suite.main(["--device", "cpu", "--quick", "--report", str(report), "--workdir", str(tmp_path / "work")])
    text = report.read_text()
    assert "FAILED" not in text, text
    for title in ("CUDA-marked tests", "Step cost", "Extraction against the bare forward", "Stage-2 input",
                  "Frames that fit"):
        assert f"## {title}" in text
    assert "`pytest -m gpu`: NOT RUN" in text  # collected, and skipped without CUDA: not "passed"
    for row in ("synthetic tensors on the device", "resident on cpu", "streamed shards", "baseline", "cached"):
        assert row in text


def test_the_tests_section_says_passed_only_when_tests_ran_and_passed() -> None:
    assert gpu_suite.pytest_status(0, "12 passed, 3 skipped in 9.1s").startswith("passed (12 passed")
    assert gpu_suite.pytest_status(0, "17 skipped, 400 deselected in 2.0s").startswith("NOT RUN")
    assert gpu_suite.pytest_status(5, "no tests ran in 0.1s").startswith("NOT RUN")
    assert gpu_suite.pytest_status(1, "1 failed, 11 passed in 9.1s") == "FAILED (exit 1)"
