"""benchmarks/bench_inference.py runs as docs/refine.md says, for the shipped refiner and for
the default config's model, and its table has a row per case with the network calls it
counted (the numbers themselves are the benchmark's, not a test's)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("model", ["shipped", "config"])
def test_the_inference_benchmark_prints_a_row_per_case(model):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_inference.py")]
        + ["--sizes", "128", "--fixed", "32", "--model", model],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 128² |")]
    assert len(rows) == 2, result.stdout
    assert all(" 1 x " in row for row in rows)  # one network call each: no tiling at 128 px
