"""benchmarks/gpu_check.py (``make gpu-check``) at its tiny CPU scale: every row of the table
is there, measured rows hold finite positive numbers and the GPU-only rows say "skipped";
the DDP row's subprocess path (2 CPU processes over gloo); the fast-path rows' measurement
(GPU only in the table) run on a CPU; the sync counter it reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from pixperfect.training import fast_paths
from pixperfect.training.syncs import count_syncs

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ROWS = {
    "paper_images_per_s": "number",
    "paper_peak_memory_gib": "skipped",
    "paper_data_wait_share": "number",
    "paper_simulation_share": "number",
    "sim_speedup": "number",
    "sim_speedup_verdict": "verdict",
    "precompute_samples_per_s": "number",
    "ddp_images_per_s_total": "skipped",
    "ddp_images_per_s_per_gpu": "skipped",
    "syncs_per_step": "count",
    "fast_compile_speedup": "skipped",
    "fast_channels_last_speedup": "skipped",
    "fast_cudnn_benchmark_speedup": "skipped",
    "fast_fused_adam_speedup": "skipped",
    "fast_foreach_ema_speedup": "skipped",
    "fast_all_speedup": "skipped",
}


def _run(*args: str, env: dict | None = None, timeout: int = 300):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, **(env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def _table(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_cpu_table_has_every_row_measured_or_skipped(tmp_path):
    out = tmp_path / "check.json"
    result = _run("--device", "cpu", "--out", str(out))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    header = result.stdout.splitlines()[0]
    assert f"cpu: {torch.get_num_threads()} threads" in header
    assert f"torch {torch.__version__}" in header

    table = _table(result.stdout)
    numbers = ["1", "1", "1", "1", "2", "2", "3", "4", "4", "5", *["6"] * 6]
    assert [row[0] for row in table] == numbers
    report = json.loads(out.read_text())
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == list(ROWS)
    for (key, kind), printed in zip(ROWS.items(), table, strict=True):
        row, cell = rows[key], printed[2]
        assert printed[1] == row["measure"]
        assert not row["failed"], f"{key}: {row['failed']}"
        if kind == "skipped":
            assert row["value"] is None and cell.startswith("skipped: "), (key, cell)
            continue
        if kind == "verdict":
            assert cell in ("yes", "no"), (key, cell)
            continue
        value = float(cell)
        assert math.isfinite(value) and math.isfinite(row["value"]), (key, cell)
        # A sync count may legitimately reach 0 once syncs are removed; the rest must be > 0.
        assert value >= 0 if kind == "count" else value > 0, (key, cell)
    assert rows["ddp_images_per_s_total"]["skipped"] in ("0 GPU(s)", "1 GPU(s)", "--device cpu")
    assert {rows[k]["skipped"] for k in ROWS if k.startswith("fast_")} == {"no CUDA"}
    assert "item/bool/nonzero" in rows["syncs_per_step"]["measure"]
    # LPIPS weights are not passed: the table must say its terms were off.
    assert "LPIPS terms OFF" in result.stdout


def test_missing_shared_asset_fails_under_ci(tmp_path):
    missing = tmp_path / "no-taesd"
    result = _run("--device", "cpu", "--taesd", str(missing), env={"CI": "true"}, timeout=120)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert str(missing) in result.stderr
    assert "| # |" not in result.stdout  # no table from a run that could not be complete


def test_ddp_worker_runs_two_ranks_in_subprocesses(tmp_path):
    """The path row 4 takes on 2 GPUs, on 2 CPU processes: Lightning re-runs the script for
    rank 1, rank 0 writes the timings."""
    out = tmp_path / "ddp.json"
    args = ["--ddp-worker", str(out), "--ddp-on-cpu", "--ddp-steps", "5", "--taesd", ""]
    result = _run(*args, env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["rank"] == 0
    assert report["timed_steps"] == 1
    assert math.isfinite(report["images_per_s_per_device"]) and report["step_s"] > 0


@pytest.mark.slow
def test_fast_path_rows_measure_every_variant_on_a_cpu(monkeypatch):
    """Row 6's measurement, which the table runs on CUDA only, at the tiny CPU scale: every
    variant builds, steps and is timed; cuDNN's process-wide flag is left as it was."""
    # aot_eager: inductor's C++ compilation takes minutes on a CPU (as tests/test_fast_paths)
    monkeypatch.setattr(fast_paths, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    run = gpu_check.setup(gpu_check.parse_args(["--device", "cpu", "--taesd", ""]))
    rows = gpu_check.fast_path_rows(run)
    assert [r.skipped for r in rows] == ["no CUDA"] * 6  # the table's CPU path
    before = torch.backends.cudnn.benchmark
    rows = gpu_check.measure_fast_paths(run, rows, steps=1)
    assert torch.backends.cudnn.benchmark == before
    assert set(run.info["fast_paths"]) == {"off", *(r.key for r in rows)}
    for row in rows:
        assert math.isfinite(row.value) and row.value > 0, (row.key, row.value)
        assert "ms all off" in row.note and "ms with it" in row.note


def test_count_syncs_counts_host_reads_and_nests():
    x = torch.arange(-3.0, 4.0)
    with count_syncs("cpu") as outer:
        float(x.sum())
        with count_syncs("cpu") as inner:
            x.nonzero()
            bool(x.max() > 0)
        x + 1  # no host read
    assert inner.by_op == {"aten.nonzero": 1, "aten._local_scalar_dense": 1}
    assert outer.total == 3  # an inner block's reads count in the outer one too
