"""A real two-process DDP run over gloo on CPU, without SLURM: `pixperfect train` with
trainer.devices=2 strategy=ddp (Lightning starts the second rank as a copy of the command)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch
from conftest import local_ddp_env, local_ddp_train
from helpers import logged_steps


def _train(root: Path, *overrides: str) -> str:
    env = local_ddp_env()
    result = subprocess.run(
        local_ddp_train(root, "ddp", *overrides),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output


def test_two_process_ddp_on_cpu_trains_and_resumes_the_step_count(tmp_path):
    first = _train(tmp_path, "trainer.max_steps=3")
    # Both ranks joined one gloo process group of two.
    assert "distributed_backend=gloo" in first, first[-3000:]
    assert "All distributed processes registered. Starting with 2 processes" in first
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in first
    directory = tmp_path / "ddp"
    ckpt = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert not (directory / "checkpoints" / "step=3.ckpt").exists()  # cadence 1000: none

    second = _train(tmp_path, "trainer.max_steps=5")
    # Every rank resumed from the same checkpoint, and the step count went on from 3.
    last = directory / "checkpoints" / "last.ckpt"
    for rank in (0, 1):
        assert f"rank {rank} resuming from {last}" in second, second[-3000:]
    assert torch.load(last, weights_only=False)["global_step"] == 5
    files = sorted((directory / "tb").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert [logged_steps(f) for f in files] == [[0, 1, 2], [3, 4]]  # rank 0 logs only
