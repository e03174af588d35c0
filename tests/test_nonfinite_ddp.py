"""The non-finite guard across real processes: when one rank alone sees a non-finite
discriminator or generator loss, both ranks skip that step's update (undone on the device:
training/guard.py), stay in step, and the skipped count reaches TensorBoard and the log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import local_ddp_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

WORKER = Path(__file__).parent / "nonfinite_worker.py"


def test_a_non_finite_loss_on_one_rank_skips_that_update_on_both_ranks(tmp_path):
    env = local_ddp_env()
    result = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # same counts and the same D and G weights after every batch
    rows = {row["batch"]: row for row in ranks[0]}
    # Batch 1: rank 1's D loss was NaN: G stepped, D's update was undone (on either rank).
    assert rows[1]["d"] == rows[0]["d"] and rows[1]["g"] != rows[0]["g"]
    assert rows[1]["skipped"] == 1
    # Batch 3: rank 0's G loss was infinite: neither G's nor D's update was applied.
    assert rows[3]["g"] == rows[2]["g"] and rows[3]["d"] == rows[2]["d"]
    assert rows[3]["skipped"] == 2
    # The skip is decided on the device, without a host read (training/guard.py): D's
    # step count (lazy R1's clock) counts the steps taken or undone, one per batch.
    assert [rows[b]["d_steps"] for b in sorted(rows)] == [b + 1 for b in sorted(rows)]
    # The other batches stepped both networks.
    assert rows[2]["d"] != rows[1]["d"] and rows[4]["d"] != rows[3]["d"]
    assert rows[max(rows)]["skipped"] == 2
    assert "non-finite discriminator loss, step skipped" in output
    assert "non-finite generator loss, step skipped" in output

    events = EventAccumulator(str(tmp_path / "nonfinite" / "tb")).Reload()
    skipped = events.Scalars("train/skipped_steps")
    assert [e.value for e in skipped][:1] == [0.0]  # logged from the first step on
    assert skipped[-1].value == 2.0
