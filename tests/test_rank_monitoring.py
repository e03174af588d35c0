"""The ``time/*`` scalars (src/pixperfect/training/monitor.py) are over every rank and every
step of a log window: the reduction on made-up windows, then a real 2-rank CPU DDP run
(gloo) in which rank 1 is slow, first in its forward, then in its data loader
(tests/slow_rank_worker.py), and the logged scalars show rank 1.

No absolute time is asserted beyond the sleep itself (a sleep of SLOW_S lasts at least
SLOW_S) and generous ratios between the two ranks."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import local_ddp_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixperfect.training.monitor import FIELDS, RankMonitor, peak_flops, window_statistics
from pixperfect.training.visuals import grid_indices

STEP, DATA, SIM, PRESYNC, IMAGES = range(len(FIELDS))
SLOW_S = 0.5


def window(rows: list[list[list[float]]]) -> torch.Tensor:
    """(ranks, steps, FIELDS) from per-rank rows of (step_s, data_s, presync_s)."""
    out = torch.full((len(rows), max(len(r) for r in rows), len(FIELDS)), math.nan)
    for rank, steps in enumerate(rows):
        for i, (step, data, presync) in enumerate(steps):
            out[rank, i] = torch.tensor([step, data, presync / 2, presync, 2.0])
    return out


def test_mean_max_p95_are_over_every_rank_and_step_and_the_slowest_rank_is_found():
    gathered = window(
        [
            [[1.0, 0.0, 0.1], [1.0, 0.0, 0.1], [1.0, 0.0, 0.1], [1.0, 0.0, 0.1]],
            [[1.0, 0.0, 0.8], [1.0, 0.0, 0.8], [1.0, 0.0, 0.8], [1.0, 0.0, 0.8]],
            [[1.0, 0.0, 0.1], [1.0, 0.0, 0.1], [1.0, 0.0, 0.1], [3.0, 1.0, 0.1]],
        ]
    )
    s = window_statistics(gathered)
    steps = torch.tensor([1.0] * 11 + [3.0], dtype=torch.float64)
    assert s["time/step_s_mean"] == pytest.approx(float(steps.mean()))
    assert s["time/step_s_max"] == 3.0
    assert s["time/step_s_p95"] == pytest.approx(float(torch.quantile(steps, 0.95)))
    assert s["time/data_s_max"] == 1.0
    assert s["time/data_wait_share_max"] == pytest.approx(0.25)  # 1 / (1 + 3)
    assert s["time/presync_s_max"] == pytest.approx(0.8)
    # Rank 1 arrives 0.8 s into every step, rank 2 (a data spike) 0.35 s on average.
    assert s["time/slowest_rank"] == 1
    assert s["time/slowest_rank_lag_s"] == pytest.approx(0.8 - 0.35)
    # 2 images per step over step_s + data_s, per rank: mean and sum over ranks.
    rates = [8 / 4, 8 / 4, 8 / 7]
    assert s["time/images_per_s"] == pytest.approx(sum(rates) / 3)
    assert s["time/images_per_s_total"] == pytest.approx(sum(rates))
    assert "time/mfu" not in s  # no peak known


def test_padding_and_missing_data_waits_are_left_out_and_mfu_needs_a_peak():
    # Rank 0 ran 2 steps of a window of 4 (padding NaN); the first data wait is unknown.
    gathered = window([[[2.0, math.nan, 0.5], [2.0, 2.0, 0.5]], [[4.0, math.nan, 0.5]]])
    s = window_statistics(gathered, flops_per_image=1e9, peak=1e10)
    assert s["time/step_s_mean"] == pytest.approx(8 / 3)
    assert s["time/data_s_mean"] == 2.0 and s["time/data_wait_share_max"] == 0.5
    assert s["time/slowest_rank"] == 0  # 0.5 + 2 on its second step
    assert s["time/mfu"] == pytest.approx(s["time/images_per_s"] * 1e9 / 1e10)
    assert window_statistics(torch.full((2, 3, len(FIELDS)), math.nan)) == {}


def test_one_rank_monitor_times_the_marked_spans_on_host_clocks():
    monitor = RankMonitor(torch.device("cpu"), capacity=3)
    for _ in range(5):  # more batches than the window holds: the last 3 are kept
        for name in ("batch_start", "step_start", "simulated", "presync"):
            monitor.mark(name)
        monitor.end_batch(images=2)
    rows = monitor.gather()
    assert rows.shape == (1, 3, len(FIELDS))
    assert np.isfinite(rows).all() and (rows[..., IMAGES] == 2).all()
    assert (rows[..., PRESYNC] >= rows[..., SIM]).all()
    assert (rows[..., STEP] >= rows[..., PRESYNC]).all()
    # The window empties at each reduction; after validation the data clock restarts.
    monitor.restart_data_clock()
    assert np.isnan(monitor.gather()).all()


def test_the_peak_is_given_or_known_for_cuda_devices_only():
    cpu = torch.device("cpu")
    assert peak_flops(cpu, "32-true", None) is None
    assert peak_flops(cpu, "32-true", 2.5) == 2.5e12


def test_the_image_grid_shows_one_sample_per_family_combination_first():
    families = ["colour", "colour", "jpeg", "colour+jpeg", "jpeg", "colour", "jpeg", "jpeg"]
    assert grid_indices(families, count=3) == [0, 2, 3]
    chosen = grid_indices(families, count=5)
    assert {0, 2, 3} <= set(chosen) and len(chosen) == 5 and chosen == sorted(chosen)
    assert grid_indices(["a"] * 3, count=8) == [0, 1, 2]
    assert grid_indices(families, count=5) == chosen  # fixed


def _scalars(event_file: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return {
        tag: {e.step: e.value for e in acc.Scalars(tag)}
        for tag in acc.Tags()["scalars"]
        if tag.startswith("time/")
    }


@pytest.fixture(scope="module")
def slow_rank_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slow")
    worker = Path(__file__).parent / "slow_rank_worker.py"
    result = subprocess.run(
        [sys.executable, str(worker), str(root), str(SLOW_S)],
        capture_output=True,
        text=True,
        env=local_ddp_env(),
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output, output[-3000:]
    return root


def test_a_rank_slow_in_its_step_is_the_slowest_rank_and_its_time_the_max(slow_rank_run):
    (event_file,) = (slow_rank_run / "slow" / "tb").glob("events.out.tfevents.*")
    logged = _scalars(event_file)
    gathered = torch.load(slow_rank_run / "windows" / "rank0_0.pt")  # steps 0-3, both ranks
    other = torch.load(slow_rank_run / "windows" / "rank1_0.pt")  # the same on every rank
    torch.testing.assert_close(gathered, other, rtol=0, atol=0, equal_nan=True)
    assert gathered.shape == (2, 4, len(FIELDS)) and torch.isfinite(gathered[..., STEP]).all()
    # Rank 1's forward slept: its work before the first collective holds the sleep, rank 0's
    # does not (rank 0 waits inside the collective, so both ranks' step_s hold it).
    assert (gathered[1, :, PRESYNC] >= SLOW_S).all(), gathered[..., PRESYNC]
    assert gathered[0, :, PRESYNC].max() < gathered[1, :, PRESYNC].min() / 2
    assert logged["time/slowest_rank"][3] == 1
    assert logged["time/step_s_max"][3] == pytest.approx(float(gathered[..., STEP].max()))
    assert logged["time/step_s_max"][3] >= SLOW_S
    assert logged["time/presync_s_max"][3] == pytest.approx(float(gathered[1, :, PRESYNC].max()))
    assert logged["time/slowest_rank_lag_s"][3] >= SLOW_S / 2
    expected = window_statistics(gathered)
    for tag in ("time/step_s_mean", "time/step_s_p95", "time/data_wait_share_p95"):
        assert logged[tag][3] == pytest.approx(expected[tag], rel=1e-5), tag


def test_a_data_stall_on_one_rank_shows_in_the_data_wait_share_max_and_p95(slow_rank_run):
    (event_file,) = (slow_rank_run / "slow" / "tb").glob("events.out.tfevents.*")
    logged = _scalars(event_file)
    gathered = torch.load(slow_rank_run / "windows" / "rank0_1.pt")  # steps 4-7
    share = gathered[..., DATA] / (gathered[..., DATA] + gathered[..., STEP])
    # Rank 1 waited for its data on every step of the window; rank 0 did not (it waited for
    # rank 1 inside the step's collectives instead).
    assert (gathered[1, :, DATA] >= SLOW_S).all(), gathered[..., DATA]
    assert share[0].max() < share[1].min() / 2, share
    assert logged["time/slowest_rank"][7] == 1
    assert logged["time/data_wait_share_max"][7] == pytest.approx(float(share.max()), rel=1e-5)
    p95 = float(torch.quantile(share.flatten().double(), 0.95))
    assert logged["time/data_wait_share_p95"][7] == pytest.approx(p95, rel=1e-5)
    assert logged["time/data_wait_share_p95"][7] > 2 * logged["time/data_wait_share_p95"][3]
    assert logged["time/data_s_max"][7] >= SLOW_S
    # Both windows logged, at the log steps only; images/s is per device.
    assert sorted(logged["time/step_s_max"]) == [3, 7]
    assert logged["time/images_per_s_total"][7] == pytest.approx(
        2 * logged["time/images_per_s"][7], rel=1e-5
    )
