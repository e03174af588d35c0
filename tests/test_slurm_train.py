"""slurm/train.sbatch on a real two-node SLURM cluster: DDP over gloo across the two "nodes",
preempted with SIGUSR1, requeued, resumed with a continuous step count (``-m slurm``)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY
from slurm_cluster import (  # noqa: F401
    ROOT,
    job_records,
    slurm_cluster_fixture,
    start_now,
    submit,
    wait_for,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TRAIN = ROOT / "slurm" / "train.sbatch"
MAX_STEPS = 300  # about 8 steps/s with two ranks on the 2-core test machine
pytestmark = pytest.mark.slurm


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(no log yet)"


def _record(job: str) -> dict[str, str]:
    return job_records(job)[0]


def _logged_steps(event_file: Path) -> list[int]:
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return [e.step for e in acc.Scalars("train/loss")]


def test_train_is_preempted_requeued_and_resumes_across_two_nodes(slurm_cluster, tmp_path):
    runs, log_path = tmp_path / "runs", tmp_path / "train.log"
    directory = runs / "slurm"
    job = submit(
        TRAIN,
        "--config",
        ROOT / "configs" / "demo.yaml",
        *TINY,
        f"run.root={runs}",
        "run.name=slurm",
        "trainer.strategy=ddp",
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.ckpt_every_n_steps=10",
        options=["--nodes=2", "--ntasks-per-node=1", f"--output={log_path}"],
        cwd=tmp_path,
    )
    try:
        # Both ranks train: wait for a periodic checkpoint, then preempt. Without --batch
        # (or --full) scancel signals the job's steps, i.e. every training process, as
        # `#SBATCH --signal=USR1@N` does before the time limit.
        deadline = time.monotonic() + 180
        while not (directory / "checkpoints" / "step=20.ckpt").exists():
            state = _record(job)["JobState"]
            assert state in {"PENDING", "RUNNING"}, f"{state}\n{_read(log_path)}"
            assert time.monotonic() < deadline, f"no step=20.ckpt in 180 s\n{_read(log_path)}"
            time.sleep(0.5)
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)

        # Requeued: SLURM holds it PENDING (BeginTime) for a few seconds; start it now.
        deadline = time.monotonic() + 90
        while True:
            record = _record(job)
            if int(record.get("Restarts", 0)) >= 1 and record["JobState"] == "PENDING":
                start_now(job)
                break
            if int(record.get("Restarts", 0)) >= 1 and record["JobState"] == "RUNNING":
                break  # it started on its own already
            assert record["JobState"] in {"RUNNING", "COMPLETING", "REQUEUED", "PENDING"}, (
                f"{record['JobState']}\n{_read(log_path)}"
            )
            assert time.monotonic() < deadline, f"not requeued in 90 s\n{_read(log_path)}"
            time.sleep(0.5)

        state = wait_for(job, timeout=300)
        log = _read(log_path)
        assert state == "COMPLETED", log[-6000:]
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)

    # Two starts of one job in one log (--open-mode=append), the second SLURM_RESTART_COUNT=1.
    assert _record(job)["Restarts"] == "1"
    assert "start 0 (SLURM_RESTART_COUNT)" in log and "start 1 (SLURM_RESTART_COUNT)" in log
    assert log.rstrip().endswith("train: exit status 0"), log[-6000:]
    # Both starts ran DDP over gloo with two processes, one per node.
    assert log.count("distributed_backend=gloo") == 2, log[-6000:]
    assert log.count("All distributed processes registered. Starting with 2 processes") == 2
    assert log.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2

    # Every rank stopped at the same step, rank 0 saved and requeued.
    preempted = {int(r): int(s) for r, s in re.findall(r"rank (\d): preempted at step (\d+)", log)}
    assert set(preempted) == {0, 1} and len(set(preempted.values())) == 1, log[-6000:]
    step = preempted[0]
    assert 20 <= step < MAX_STEPS
    assert f"requeued SLURM job {job} at step {step}" in log
    hpc = directory / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, weights_only=False)["global_step"] == step

    # Both ranks of the second start resumed from the same checkpoint, at that step: the
    # preemption checkpoint, or one written at the same step right after it (a periodic one,
    # or last.ckpt at the end of the stopped fit, since overwritten by the final one; the
    # continuous step count below checks that case).
    resumed = dict(re.findall(r"rank (\d) resuming from (\S+)", log))
    assert set(resumed) == {"0", "1"} and resumed["0"] == resumed["1"], log[-6000:]
    if Path(resumed["0"]).name != "last.ckpt":
        assert torch.load(resumed["0"], weights_only=False)["global_step"] == step

    # ... and went on from there to max_steps: the step count is continuous.
    final = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == MAX_STEPS
    files = sorted((directory / "tb").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert len(files) == 2
    first, second = map(_logged_steps, files)
    assert first == list(range(step)) and second == list(range(step, MAX_STEPS))
