"""A rank that stops answering ends a DDP run instead of hanging it: two processes over gloo on
CPU without SLURM (`pixperfect train trainer.devices=2 trainer.strategy=ddp`, as in
tests/test_ddp.py), rank 1 stopped with SIGSTOP mid-training; rank 0 leaves its collective
after trainer.ddp_timeout_s and the command fails. (A rank killed outright is seen at once:
tests/test_slurm_train.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import procs
from conftest import gloo_timed_out, local_ddp_env, local_ddp_train

TIMEOUT_S = 15


def test_a_stopped_rank_ends_the_run_with_an_error_after_ddp_timeout_s(tmp_path):
    env = local_ddp_env()
    log = tmp_path / "train.log"
    first = tmp_path / "ddp" / "checkpoints" / "step=5.ckpt"
    with open(log, "w") as out:
        command = subprocess.Popen(
            local_ddp_train(
                tmp_path,
                "ddp",
                "trainer.max_steps=100000",
                "trainer.ckpt_every_n_steps=5",
                f"trainer.ddp_timeout_s={TIMEOUT_S}",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # one process group: nothing outlives the test
        )
    try:
        deadline = time.monotonic() + 120
        while not first.exists():  # both ranks are stepping
            assert command.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(0.2)
        # Rank 1: the copy of the command Lightning started, LOCAL_RANK=1 in its environment.
        rank1 = [
            p for p in procs.descendants(command.pid) if procs.environ(p).get("LOCAL_RANK") == "1"
        ]
        assert len(rank1) == 1, f"{rank1}\n{log.read_text()[-5000:]}"
        os.kill(rank1[0], signal.SIGSTOP)
        stopped = time.monotonic()
        returncode = command.wait(timeout=TIMEOUT_S + 120)
        elapsed = time.monotonic() - stopped
    finally:
        procs.kill_group(command.pid)

    output = log.read_text()
    assert returncode != 0, output[-5000:]
    # Rank 0 waited out the timeout in a collective (not less: the peer was alive) and left;
    # measured: the command exited 15.8 s after the stop.
    assert gloo_timed_out(output, TIMEOUT_S), output[-5000:]
    # (No lower bound: rank 0 may have waited for a slow rank 1 before it was stopped.)
    assert elapsed < TIMEOUT_S + 60, f"{elapsed:.1f} s\n{output[-5000:]}"
    # ... and killed the stopped rank rather than leave it behind.
    assert f"killing rank process {rank1[0]}" in output, output[-5000:]
    assert procs.state(rank1[0]) in (None, "Z"), procs.state(rank1[0])
