"""Preemption: on SIGUSR1 (SLURM: ``#SBATCH --signal=USR1@120`` before the time limit;
slurm/train.sbatch) all ranks save ``hpc_ckpt_N.ckpt`` together at the end of the current
step and the fit stops; at the end of training (logs flushed) rank 0 requeues the SLURM job
(``scontrol requeue``); the requeued job resumes from that checkpoint
(training/run_folder.py).

Lightning's own handler (``SLURMEnvironment(auto_requeue=True)``) is off
(training/cluster.py: ``cluster_plugins``): it saves inside the signal handler, and under DDP
that save is a collective, so a rank interrupted mid-step waits at the barrier while another
waits in the gradient all-reduce, for ever (seen on the local cluster).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


def next_hpc_path(directory: Path) -> Path:
    """``hpc_ckpt_<N+1>.ckpt`` after the highest N in ``directory`` (Lightning's naming)."""
    versions = [
        int(m.group(1))
        for p in directory.glob("hpc_ckpt_*.ckpt")
        if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))
    ]
    return directory / f"hpc_ckpt_{max(versions, default=0) + 1}.ckpt"


REQUEUE_WAIT_S = 120  # how long ranks wait for SLURM to stop them after a requeue


class Preemption(Callback):
    """SIGUSR1 means "save and get out": at the end of the step in progress every rank saves
    ``hpc_ckpt_N.ckpt`` in the run directory (a collective; rank 0 writes) and the fit stops;
    at the end of training, with the loggers flushed, rank 0 requeues the SLURM job if there
    is one. Requeueing kills the job's processes at once, so it must come
    after everything this start has to write, not inside the step.

    The signal handler only sets a flag. The ranks agree on it with an all-reduce ("any")
    at the end of every ``poll_every``-th step (``trainer.preempt_poll_every``; the
    all-reduce makes the host wait for the device, so not every step), a point all ranks
    reach at the same global step, so one signalled rank is enough, every rank stops at the
    same step, and no collective ever runs inside a signal handler. In one process there is
    nothing to agree on: the flag is looked at every step."""

    def __init__(self, directory: Path, signum: int = signal.SIGUSR1, poll_every: int = 1) -> None:
        self.directory, self.signum, self.poll_every = directory, signum, poll_every
        self.requested = False
        self.preempted_at: int | None = None  # the step this start saved at when preempted
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True  # nothing else here: see the class docstring

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def polls(self, trainer: L.Trainer) -> bool:
        """Whether the ranks agree on the flag at the end of this step: every
        ``poll_every``-th global step (the same on every rank), every step in one process."""
        return trainer.world_size == 1 or trainer.global_step % self.poll_every == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.polls(trainer):
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        # Only rank 0 writes, so only its path counts (another rank may see its file already).
        path = next_hpc_path(self.directory)
        log.info("rank %d: preempted at step %d", trainer.global_rank, trainer.global_step)
        trainer.save_checkpoint(path)  # every rank: a collective under DDP
        if trainer.is_global_zero:
            log.info("preemption checkpoint: %s", path)
        self.preempted_at = trainer.global_step
        trainer.should_stop = True
        self.requested = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the loop (the last step's scalars are logged) and after SaveLastOnTrainEnd.
        if self.preempted_at is None:
            return
        for logger in trainer.loggers:
            logger.save()
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "flush"):
                experiment.flush()
        job = os.environ.get("SLURM_JOB_ID")
        if not (job and SLURMEnvironment.detect()):
            return
        # Every rank stays alive until SLURM ends the job: a rank that exits first makes
        # the step fail, and the job can then end FAILED instead of REQUEUED.
        trainer.strategy.barrier("preemption")
        requeued = self._requeue(job) if trainer.is_global_zero else False
        if trainer.strategy.broadcast(requeued, src=0):
            time.sleep(REQUEUE_WAIT_S)
            log.warning("rank %d: still running %d s after the requeue", trainer.global_rank,
                        REQUEUE_WAIT_S)  # fmt: skip

    def _requeue(self, job: str) -> bool:
        """Rank 0: put the SLURM job back in the queue (``--requeue`` allows it)."""
        if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        # Said before: SLURM may kill this process before scontrol's answer is read.
        log.info("requeueing SLURM job %s at step %d", job, self.preempted_at)
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
            return False
        log.info("requeued SLURM job %s at step %d", job, self.preempted_at)
        return True
