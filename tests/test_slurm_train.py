"""slurm/train.sbatch on a real two-node SLURM cluster: DDP over gloo across the two "nodes",
preempted with SIGUSR1, requeued, resumed with a continuous step count; a rank killed or
stopped fails the job instead of hanging it, and the same command resumes (``-m slurm``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import procs
import pytest
import torch
from assets import TAESD_DIR, require
from conftest import TINY, gloo_timed_out
from helpers import logged_steps
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


def _wait_for_checkpoint(job: str, checkpoint: Path, log_path: Path, poll: float) -> None:
    """Until ``checkpoint`` exists (every rank is stepping), polling every ``poll`` s; fails
    if the job leaves PENDING/RUNNING first or after 240 s."""
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        state = _record(job)["JobState"]
        assert state in {"PENDING", "RUNNING"}, f"{state}\n{_read(log_path)}"
        assert time.monotonic() < deadline, f"no {checkpoint.name} in 240 s\n{_read(log_path)}"
        time.sleep(poll)


def _preempt_requeue_and_finish(job: str, first: Path, log_path: Path) -> str:
    """Wait for checkpoint ``first`` (both ranks train), preempt the job with SIGUSR1, start
    its requeued copy at once and wait for it to complete; returns the job's log."""
    # Without --batch (or --full) scancel signals the job's steps, i.e. every training
    # process, as `#SBATCH --signal=USR1@N` does before the time limit.
    _wait_for_checkpoint(job, first, log_path, poll=0.5)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)

    # Requeued: SLURM holds it PENDING (BeginTime) for a few seconds; start it now.
    deadline = time.monotonic() + 120
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
        assert time.monotonic() < deadline, f"not requeued in 120 s\n{_read(log_path)}"
        time.sleep(0.5)

    state = wait_for(job, timeout=420)
    log = _read(log_path)
    assert state == "COMPLETED", log[-6000:]
    return log


def _assert_resumed_where_preempted(job: str, log: str, directory: Path, max_steps: int) -> int:
    """Two starts of one job, both DDP over gloo with a rank per node; every rank stopped at
    the same step and the second start went on from it to ``max_steps``. Returns that step."""
    # Two starts of one job in one log (--open-mode=append), the second SLURM_RESTART_COUNT=1.
    assert _record(job)["Restarts"] == "1"
    assert "start 0 (SLURM_RESTART_COUNT)" in log and "start 1 (SLURM_RESTART_COUNT)" in log
    assert log.rstrip().endswith("train: exit status 0"), log[-6000:]
    assert log.count("preflight: passed") == 2, log[-6000:]  # before each start's srun
    # Both starts ran DDP over gloo with two processes, one per node.
    assert log.count("distributed_backend=gloo") == 2, log[-6000:]
    assert log.count("All distributed processes registered. Starting with 2 processes") == 2
    assert log.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2

    # Every rank stopped at the same step, rank 0 saved and requeued.
    preempted = {int(r): int(s) for r, s in re.findall(r"rank (\d): preempted at step (\d+)", log)}
    assert set(preempted) == {0, 1} and len(set(preempted.values())) == 1, log[-6000:]
    step = preempted[0]
    assert 0 < step < max_steps
    # Rank 0 said it requeues (the job's Restarts above say it did; the "requeued" line
    # after scontrol returns may be cut off: the requeue kills the job's processes).
    assert f"requeueing SLURM job {job} at step {step}" in log
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
    assert final["global_step"] == max_steps
    files = sorted((directory / "tb").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert len(files) == 2
    first, second = map(logged_steps, files)
    assert first == list(range(step)) and second == list(range(step, max_steps))
    return step


def _submit_demo_run(runs: Path, log_path: Path, max_steps: int, *overrides: str) -> str:
    """slurm/train.sbatch on 2 nodes x 1 task: the tiny demo recipe in ``runs/slurm``, a
    checkpoint every 10 steps."""
    return submit(
        TRAIN,
        "--config",
        ROOT / "configs" / "demo.yaml",
        *TINY,
        f"run.root={runs}",
        "run.name=slurm",
        "trainer.strategy=ddp",
        f"trainer.max_steps={max_steps}",
        "trainer.ckpt_every_n_steps=10",
        *overrides,
        options=["--nodes=2", "--ntasks-per-node=1", f"--output={log_path}"],
        cwd=runs.parent,
    )


def test_train_is_preempted_requeued_and_resumes_across_two_nodes(slurm_cluster, tmp_path):
    runs, log_path = tmp_path / "runs", tmp_path / "train.log"
    directory = runs / "slurm"
    job = _submit_demo_run(runs, log_path, MAX_STEPS)
    try:
        log = _preempt_requeue_and_finish(job, directory / "checkpoints" / "step=20.ckpt", log_path)
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    step = _assert_resumed_where_preempted(job, log, directory, MAX_STEPS)
    assert step >= 20


PAPER_STEPS = 16
PAPER_TINY = [  # configs/paper.yaml at CPU scale: every term on, warm-ups inside the run
    "data.shards=shards/clean-64",
    "data.crop_size=64",
    "data.val_crop_size=64",
    "data.batch_size=2",
    "data.num_workers=1",
    "data.val_samples_per_image=1",
    "model.base_channels=8",
    "model.ffc_blocks=1",
    "gan.base_channels=8",
    "gan.warmup_steps=2",
    "gan.r1_every=2",
    "loss.tone.warmup_steps=4",
    "loss.tone.samples_per_region=512",
    f"trainer.max_steps={PAPER_STEPS}",
    "trainer.ckpt_every_n_steps=4",
    "trainer.val_every_n_steps=1000",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "trainer.preempt_poll_every=2",  # 16 steps: polled within the run
    # inductor's C++ code generation takes minutes on a 1-CPU node (the paper config compiles
    # the generator; tests/test_fast_paths.py trains it compiled, with aot_eager)
    "trainer.compile=false",
]


def _scalars(directory: Path) -> dict[str, list[int]]:
    """Tag -> logged steps, over every event file of the run."""
    steps: dict[str, list[int]] = {}
    for path in sorted((directory / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    return steps


def test_paper_recipe_trains_every_term_on_two_nodes_and_resumes_after_preemption(
    slurm_cluster, tmp_path
):
    """configs/paper.yaml (narrow FFC, 64 px) as a user launches it: clean shards with the
    artifacts, TAEF2 round trip included, simulated in the step; LPIPS from a weights file
    staged where the config names it (random AlexNet features: the wiring, never reported as
    LPIPS); GAN in both spaces, tone terms after their warm-up, lazy R1, EMA, bf16 autocast."""
    from PIL import Image
    from skimage import data as skimage_data
    from torchvision.models import alexnet

    from pixperfect.shards.build import BuildSpec, build

    spec = BuildSpec(
        ["skimage:astronaut", "skimage:rocket", "skimage:coffee", "skimage:chelsea"],
        kind="clean",
        size=64,
        crops_per_image=4,
        shard_size=4,
    )
    build(spec, tmp_path / "shards" / "clean-64", progress=False)
    val = tmp_path / "photos" / "val"  # the config's held-out photos (data.val_images)
    val.mkdir(parents=True)
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(skimage_data, name)()).save(val / f"{name}.png")
    lpips = tmp_path / "weights" / "lpips"
    lpips.mkdir(parents=True)
    state = {k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(state, lpips / "alexnet-owt-7be5be79.pth")
    (tmp_path / "weights" / "taesd").symlink_to(require(TAESD_DIR))

    log_path, directory = tmp_path / "paper.log", tmp_path / "runs" / "paper"
    job = submit(
        TRAIN,
        "--config",
        ROOT / "configs" / "paper.yaml",
        *PAPER_TINY,
        options=["--nodes=2", "--ntasks-per-node=1", f"--output={log_path}"],
        cwd=tmp_path,  # the config's relative paths (shards, weights, runs) are from here
    )
    try:
        log = _preempt_requeue_and_finish(job, directory / "checkpoints" / "step=4.ckpt", log_path)
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    _assert_resumed_where_preempted(job, log, directory, PAPER_STEPS)
    assert "latent codec: taesd taef2" in log and "LPIPS-alex weights" in log  # preflight
    # A 1-CPU task with a loader worker runs, slowly: said, not refused.
    assert "warn  data.num_workers=1 loader workers + the training process on 1 CPU" in log

    steps = _scalars(directory)
    for term in ("l1", "lpips", "adversarial", "tone_l1", "tone_lpips", "tone_adversarial"):
        assert f"train/{term}" in steps, sorted(steps)
    assert {"d/loss", "d/r1", "d/logits_real", "d/logits_fake"} <= set(steps)
    assert min(steps["train/tone_l1"]) == 4 and min(steps["train/tone_adversarial"]) == 4
    assert min(steps["train/adversarial"]) == 2 and min(steps["d/loss"]) == 2
    final = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert any(k.startswith("generator_ema.") for k in final["state_dict"])
    assert final["discriminator_steps"] == PAPER_STEPS - 2
    assert final["hyper_parameters"]["config"]["trainer"]["precision"] == "bf16-mixed"


DEAD_RANK_STEPS = 80  # the killed job gets to step 10-15; the resubmitted one finishes


def _rank_process(job: str, rank: int, checkpoint: Path, log_path: Path) -> int:
    """Once ``checkpoint`` exists (every rank is stepping): the pid of the job's training
    process of global rank ``rank`` (SLURM_PROCID), found by its environment."""
    _wait_for_checkpoint(job, checkpoint, log_path, poll=0.2)
    found = [
        pid
        for pid in procs.processes(SLURM_JOB_ID=job, SLURM_PROCID=str(rank))
        if "train" in procs.cmdline(pid) and any("pixperfect" in a for a in procs.cmdline(pid))
    ]
    assert len(found) == 1, [procs.cmdline(p) for p in found]
    return found[0]


def test_a_killed_rank_fails_the_job_at_once_and_the_same_command_resumes_from_the_newest(
    slurm_cluster, tmp_path
):
    runs, directory = tmp_path / "runs", tmp_path / "runs" / "slurm"
    first_log, second_log = tmp_path / "killed.log", tmp_path / "resumed.log"
    job = _submit_demo_run(runs, first_log, DEAD_RANK_STEPS)
    try:
        rank1 = _rank_process(job, 1, directory / "checkpoints" / "step=10.ckpt", first_log)
        assert procs.environ(rank1)["SLURMD_NODENAME"] == "n2"
        os.kill(rank1, signal.SIGKILL)
        killed = time.monotonic()
        state = wait_for(job, timeout=60, poll=0.2)
        elapsed = time.monotonic() - killed
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    log = _read(first_log)
    # Ended, failed, at once: rank 0's next collective saw the connection reset, srun saw a
    # task killed (--kill-on-bad-exit ends the others). Measured: FAILED 0.8 s after the kill.
    assert state == "FAILED" and elapsed < 30, f"{state} after {elapsed:.1f} s\n{log[-6000:]}"
    assert _record(job)["ExitCode"] != "0:0"
    assert "srun: error: n2: task 1: Killed" in log, log[-6000:]
    assert re.search(r"train: exit status [1-9]", log), log[-6000:]

    # The same command again resumes from the newest periodic checkpoint (none is damaged:
    # saves are atomic), on both ranks, and the step count goes on from it.
    newest = max(
        (directory / "checkpoints").glob("step=*.ckpt"),
        key=lambda p: int(re.fullmatch(r"step=(\d+)\.ckpt", p.name).group(1)),
    )
    step = torch.load(newest, weights_only=False)["global_step"]
    assert 10 <= step < DEAD_RANK_STEPS
    again = _submit_demo_run(runs, second_log, DEAD_RANK_STEPS)
    try:
        state = wait_for(again, timeout=300)
    finally:
        subprocess.run(["scancel", again], capture_output=True, timeout=30)
    log = _read(second_log)
    assert state == "COMPLETED", log[-6000:]
    for rank in (0, 1):
        assert f"rank {rank} resuming from {newest}" in log, log[-6000:]
    final = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == DEAD_RANK_STEPS
    files = sorted((directory / "tb").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert len(files) == 2
    first, second = map(logged_steps, files)
    assert first[:step] == list(range(step)) and second == list(range(step, DEAD_RANK_STEPS))


def test_a_stopped_rank_fails_the_job_after_ddp_timeout_s_instead_of_hanging_it(
    slurm_cluster, tmp_path
):
    timeout_s = 15
    runs, log_path = tmp_path / "runs", tmp_path / "stopped.log"
    job = _submit_demo_run(runs, log_path, 100000, f"trainer.ddp_timeout_s={timeout_s}")
    rank1 = None
    try:
        rank1 = _rank_process(job, 1, runs / "slurm" / "checkpoints" / "step=10.ckpt", log_path)
        os.kill(rank1, signal.SIGSTOP)  # alive, sockets open, never answers
        stopped = time.monotonic()
        state = wait_for(job, timeout=timeout_s + 90, poll=0.2)
        elapsed = time.monotonic() - stopped
        left = procs.state(rank1)  # before the clean-up below
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
        if rank1 is not None and procs.state(rank1) == "T":
            os.kill(rank1, signal.SIGKILL)
    log = _read(log_path)
    # Rank 0 left its collective after the timeout and exited 1; srun (--kill-on-bad-exit)
    # then ended the stopped task. Measured: FAILED 16.6 s after the stop. Without
    # --kill-on-bad-exit srun waited for the stopped task: still RUNNING 90 s later.
    assert state == "FAILED", f"{state}\n{log[-6000:]}"
    assert elapsed < timeout_s + 60, f"{elapsed:.1f} s\n{log[-6000:]}"
    assert gloo_timed_out(log, timeout_s), log[-6000:]
    assert "srun: error: n1: task 0: Exited with exit code 1" in log, log[-6000:]
    assert left in (None, "Z"), left  # SLURM ended the stopped process too
