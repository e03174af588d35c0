"""benchmarks/harness.py, what every benchmark times and prints with: the median after a
warm-up, a read rate after an untimed batch, fixed-width and markdown tables, the machine
line."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402


def test_time_it_runs_one_warm_up_then_takes_the_median_of_the_repeats(monkeypatch):
    calls = []
    clock = iter([0.0, 1.0, 10.0, 14.0, 20.0, 22.0])  # runs of 1, 4 and 2 s: mean 2.33
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    seconds = harness.time_it(lambda: calls.append(1), torch.device("cpu"), repeats=3)
    assert len(calls) == 4 and seconds == 2.0


def test_read_rate_leaves_the_first_batch_out_and_converts_each_timed_one(monkeypatch):
    converted = []
    clock = iter([5.0, 7.0])
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    loader = harness.repeat([10, 20], times=2)  # 10, 20, 10, 20
    rate = harness.read_rate(loader, batches=3, batch_size=4, each=converted.append)
    assert converted == [20, 10, 20] and rate == 3 * 4 / 2.0


def test_columns_align_the_titles_as_their_values_and_refuse_a_short_row():
    table = harness.Columns(("size", ">6"), ("recipe", "<8"), ("images/s", ">10.1f"), gap=" ")
    assert table.header() == "  size recipe     images/s"
    assert table.row(64, "full", 131.04) == "    64 full          131.0"
    assert len(table.header()) == len(table.row(64, "full", 131.04))
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        table.row(64, "full")


def test_markdown_table_right_aligns_the_columns_it_is_told_to():
    text = harness.markdown_table(["part", "ms"], [("G", "1.0"), ("D", 2)], align="lr")
    assert text.splitlines() == ["| part | ms |", "|---|---:|", "| G | 1.0 |", "| D | 2 |"]


def test_the_machine_line_names_the_cores_torch_and_whether_there_is_a_gpu():
    line = harness.machine_line()
    assert line.startswith("machine: ") and f"{os.cpu_count()} cores" in line
    assert f"torch {torch.__version__}" in line
    assert ("no GPU" in line) != torch.cuda.is_available()
