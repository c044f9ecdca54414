"""Every line the scripts print fits 100 columns: long prose wraps, long labels are explained
below their table (issue 29). summary.py in each of its modes, benchmark.py's cost table
(``--cost-only``: counted on the meta device, no timing)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIDTH = 100


def printed(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return (done.stdout + done.stderr).splitlines()


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--recipe", "caffe"],
        ["--recipe", "2012-code"],
        ["--columns", "1"],
        ["--input-size", "227"],
    ],
)
def test_summary_fits_100_columns(options):
    lines = printed("scripts/summary.py", *options)
    assert len(lines) > 20  # the tables and their notes were printed
    assert [line for line in lines if len(line) > WIDTH] == []


def test_benchmark_cost_table_fits_100_columns():
    lines = printed("scripts/benchmark.py", "--cost-only", "--batch-size", "2")
    assert any(line.startswith("model ") for line in lines)
    assert [line for line in lines if len(line) > WIDTH] == []
