"""The run folder and resume: where a run writes, and which checkpoint a launch resumes from.

runs/<run.name>/
  config.yaml            the resolved config of the latest launch
  checkpoints/last.ckpt  the checkpoint at the end of the latest launch
  checkpoints/step=N.ckpt  every trainer.ckpt_every_n_steps
  hpc_ckpt_N.ckpt        preemption checkpoints (SIGUSR1; Lightning's name and place:
                         training/preemption.py)
  tb/                    TensorBoard logs (training/tensorboard.py: what is in them)

A launch resumes from the newest of these checkpoints that loads (:func:`resume_checkpoint`),
so a rerun, a requeued SLURM job or a crashed one continues the step count. Every checkpoint
is written atomically (temp file, fsync, rename: training/checkpoints.py), so a kill during a
save leaves the previous one intact; a damaged one (from elsewhere) is skipped with a warning.
All ranks must pick the same one (:class:`ResumeAgreement`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from pixperfect.config import to_yaml
from pixperfect.training.checkpoints import (
    checkpoint_problem,
    local_rank,
    node_launch_key,
    publish_answer,
    remove_answer,
    shared_answer,
)

log = logging.getLogger(__name__)


def run_dir(cfg: DictConfig) -> Path:
    """``run.root``/``run.name``: the run's folder."""
    return Path(cfg.run.root) / cfg.run.name


class SaveLastOnTrainEnd(Callback):
    """``last.ckpt`` at the end of every fit, whatever the checkpoint cadence: the next launch
    of the same command resumes exactly where this one stopped.

    Runs on every rank: under DDP ``save_checkpoint`` is a collective (rank 0 writes, then all
    meet at a barrier), so it must not be guarded by rank."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


def warn_on_config_change(saved: Path, cfg: DictConfig) -> None:
    """A warning naming the config keys that differ from the last launch's (``saved``)."""
    if not saved.exists():
        return
    old, new = OmegaConf.load(saved), OmegaConf.create(to_yaml(cfg))  # same types both sides
    changed = [
        key
        for section in new
        for key in OmegaConf.to_container(new[section])
        if OmegaConf.select(old, f"{section}.{key}") != OmegaConf.select(new, f"{section}.{key}")
    ]
    if changed:
        log.warning(
            "resuming %s with changed config keys: %s",
            saved.parent,
            ", ".join(f"{k}" for k in changed),
        )


def resume_checkpoint(
    directory: Path, env: dict[str, str] | None = None, timeout_s: float = 1800
) -> Path | None:
    """:func:`newest_loadable` in ``directory``, checked once per node: local rank 0 checks
    and leaves its answer for the node's other ranks, which wait for it (up to
    ``timeout_s``; then they check for themselves) instead of CRC-reading every checkpoint
    again (training/checkpoints.py: ``node_launch_key``). Where the launcher names no launch
    (``env``: default ``os.environ``), every rank checks."""
    env = dict(os.environ) if env is None else env
    key = node_launch_key(env)
    if key is None:
        return newest_loadable(directory)
    if local_rank(env) == 0:
        answer = newest_loadable(directory)
        publish_answer(directory, key, answer)
        return answer
    found, answer = shared_answer(directory, key, timeout_s)
    if found:
        log.info("resume check of local rank 0 taken (%s)", answer or "new run")
        return answer
    return newest_loadable(directory)


def newest_loadable(directory: Path) -> Path | None:
    """The checkpoint a launch of the run in ``directory`` resumes from: the newest (by
    modification time) of Lightning's preemption checkpoints ``hpc_ckpt_N.ckpt``,
    ``checkpoints/last.ckpt`` and the periodic ``checkpoints/step=N.ckpt`` that loads
    (:func:`~pixperfect.training.checkpoints.checkpoint_problem`); None for a new run.

    A checkpoint that does not load is skipped with a warning naming it and why, and the next
    newest is tried; when none loads the run starts from step 0, with a warning. Temp files
    of saves in progress or killed (``.<name>.<pid>.tmp``) match none of the names.

    Every rank calls this before ``fit`` and must get the same answer: no rank writes a
    checkpoint before all ranks have joined the process group inside ``fit``, so they all see
    the same files (on a shared file system), and the choice is deterministic (ties: the
    preemption checkpoint, then last.ckpt, then the file name). :class:`ResumeAgreement`
    checks it once the ranks have met."""
    checkpoints = directory / "checkpoints"
    candidates = [
        *((0, p) for p in checkpoints.glob("step=*.ckpt")),
        *((1, p) for p in [checkpoints / "last.ckpt"] if p.is_file()),
        *((2, p) for p in directory.glob("hpc_ckpt_*.ckpt")),
    ]

    def key(item: tuple[int, Path]) -> tuple[int, int, str]:
        kind, path = item
        return path.stat().st_mtime_ns, kind, path.name

    skipped = []
    for _, path in sorted(candidates, key=key, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s", path, problem)
        skipped.append(path.name)
    if skipped:
        log.warning(
            "no loadable checkpoint in %s (skipped %s): starting from step 0",
            directory,
            ", ".join(skipped),
        )
    return None


class ResumeAgreement(Callback):
    """Once the ranks have met (``setup``, inside ``fit``, before the checkpoint is restored):
    fail on every rank, together, if they did not all pick the same checkpoint to resume
    from (:func:`resume_checkpoint` ran on each rank alone; they could differ only where
    the ranks do not see the same files). Every rank has then read its node's resume answer
    (:func:`resume_checkpoint`), which local rank 0 removes."""

    def __init__(self, resume: Path | None, directory: Path | None = None) -> None:
        self.resume, self.directory = str(resume), directory

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.directory is not None:
            remove_answer(self.directory, dict(os.environ))
        if trainer.world_size < 2:
            return
        chosen = trainer.strategy.broadcast(self.resume, src=0)
        if not trainer.strategy.reduce_boolean_decision(chosen == self.resume, all=True):
            raise RuntimeError(
                f"rank {trainer.global_rank} would resume from {self.resume}, rank 0 from "
                f"{chosen} (or another rank differs): the ranks must see the same run folder"
            )
