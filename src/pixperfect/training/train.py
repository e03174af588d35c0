"""``pixperfect train``: the entry point. Check the data, build the Lightning Trainer of a
launch, resume the run the config names and fit.

Before anything is written, a launch refuses data it cannot use (:func:`check_data`): too
few shards for its ranks x workers, or shards whose recipe contradicts the config (crop
size, format, simulator version, artifact recipe: :mod:`pixperfect.shards.match`), naming
both values and the fix. Every checkpoint records where the data came from and its recipe
hash (``data_provenance``: :class:`DataProvenance`).

The parts it puts together, each in its own module: the run folder and which checkpoint a
launch resumes from (training/run_folder.py); where the ranks run and how they talk (the
SLURM environment, GPU binding, the DDP strategy: training/cluster.py); saving and
requeueing on SIGUSR1 (training/preemption.py).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from data_sim.simulator import describe
from pixperfect.config import to_yaml
from pixperfect.errors import ConfigError
from pixperfect.sheets import contact_sheet, simulate_sheet
from pixperfect.training.checkpoints import (
    DATA_PROVENANCE_KEY,
    LAUNCH_ENV,
    AtomicCheckpointIO,
    remove_partial_saves,
)
from pixperfect.training.cluster import (
    cluster_plugins,
    ddp_strategy,
    device_plan,
    end_local_ranks,
    starts_local_ranks,
)
from pixperfect.training.datamodule import build_datamodule
from pixperfect.training.module import RefinerModule
from pixperfect.training.preemption import Preemption
from pixperfect.training.run_folder import (
    ResumeAgreement,
    SaveLastOnTrainEnd,
    resume_checkpoint,
    run_dir,
    warn_on_config_change,
)
from pixperfect.training.tensorboard import TensorBoardSummary

log = logging.getLogger(__name__)


class ContactSheet(Callback):
    """Writes a contact sheet of simulated training samples into the run directory once, so
    every run shows what its recipe looks like."""

    def __init__(self, path: Path, n: int = 8) -> None:
        self.path, self.n = path, n

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.path.exists():
            return
        cfg = pl_module.cfg
        if cfg.data.source == "shards":
            from pixperfect.shards.reader import preview

            batch, captions = preview(cfg.data.shards, self.n)
            if "composite" not in batch:  # clean shards: artifacts are made while training
                batch, params = pl_module.simulator(batch["target"], cfg.run.seed)
                captions = [f"{c}: {describe(params, i)}" for i, c in enumerate(captions)]
            contact_sheet(batch, captions, self.path)
        else:
            images = getattr(trainer.datamodule, "train_images", None)
            if not images:
                return
            size = max(cfg.data.crop_size, 128)
            simulate_sheet(pl_module.simulator, list(images.values()), self.path, self.n, size)
        log.info("contact sheet of the training data: %s", self.path)


class DataProvenance(Callback):
    """Every checkpoint records the data the run read (``checkpoint["data_provenance"]``:
    location, remote or local, kind, recipe hash...; :func:`pixperfect.shards.match.
    data_provenance`), which ``pixperfect export`` copies into the export."""

    def __init__(self, provenance: dict) -> None:
        self.provenance = provenance

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[DATA_PROVENANCE_KEY] = self.provenance


def build_trainer(
    cfg: DictConfig,
    directory: Path,
    resume: Path | None = None,
    data_provenance: dict | None = None,
) -> L.Trainer:
    """The Trainer of a launch; ``resume`` is the checkpoint it will resume from (checked to
    be the same on every rank: :class:`ResumeAgreement`); ``data_provenance`` goes into
    every checkpoint (:class:`DataProvenance`)."""
    t = cfg.trainer
    checkpoints = directory / "checkpoints"
    devices, strategy = device_plan(t)
    return L.Trainer(
        default_root_dir=directory,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=ddp_strategy(t, devices, strategy),
        precision=t.precision,
        plugins=[*cluster_plugins(), AtomicCheckpointIO()],
        # No hp_metric = -1: TensorBoardSummary declares the validation scores as the
        # hparams tab's metrics (learning rates: the module logs lr/generator, lr/discriminator).
        logger=TensorBoardLogger(str(directory), name="tb", version="", default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="{step}",
                every_n_train_steps=t.ckpt_every_n_steps,
                save_top_k=-1,
            ),
            SaveLastOnTrainEnd(checkpoints / "last.ckpt"),
            Preemption(directory, poll_every=t.preempt_poll_every),
            ContactSheet(directory / "contact_sheet.png"),
            TensorBoardSummary(),
            ResumeAgreement(resume, directory),
            *([DataProvenance(data_provenance)] if data_provenance is not None else []),
        ],
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
    )


def check_data(cfg: DictConfig) -> dict:
    """Refuse, before anything is written or trained, data the run cannot use: too few
    shards for its ranks x workers, shards whose recipe contradicts the config
    (:mod:`pixperfect.shards.match`: crop size, format, simulator version, artifact recipe;
    training and validation shards); returns the run's data provenance."""
    from pixperfect.shards.match import check_run_data

    manifest = None
    t, d = cfg.trainer, cfg.data
    ranks = (t.devices if isinstance(t.devices, int) and t.devices > 0 else 1) * t.num_nodes
    if d.source == "shards":
        # A worker without a shard of its own would starve its rank.
        from pixperfect.shards.reader import check_enough_shards

        manifest = check_enough_shards(d.shards, d.num_workers, ranks, d.batch_size, d.resample)
    if d.source == "corpus" and not d.resample:  # each slot reads input shards of its own
        from pixperfect.corpus import corpus_shards

        slots, shards = ranks * max(1, d.num_workers), len(corpus_shards(d.corpus))
        if shards < slots:
            raise ConfigError(
                f"data.corpus={d.corpus} has {shards} input shard(s) but {ranks} rank(s) x "
                f"{max(1, d.num_workers)} worker(s) need at least {slots} with "
                "data.resample=false: lower data.num_workers or set data.resample=true"
            )
    return check_run_data(cfg, manifest)


def train(cfg: DictConfig) -> Path:
    """Train (or resume) the run the config names; returns the run directory."""
    provenance = check_data(cfg)  # before the run directory exists: nothing to clean up
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)

    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    if starts_local_ranks(cfg):  # the ranks Lightning starts inherit the launch's name
        os.environ[LAUNCH_ENV] = uuid.uuid4().hex
    resume = resume_checkpoint(directory, timeout_s=cfg.trainer.ddp_timeout_s)
    # knows its rank (SLURM, DDP children)
    trainer = build_trainer(cfg, directory, resume, data_provenance=provenance)
    if trainer.is_global_zero:  # one writer; the other ranks never read config.yaml
        warn_on_config_change(directory / "config.yaml", cfg)
        (directory / "config.yaml").write_text(to_yaml(cfg))
        remove_partial_saves(directory, directory / "checkpoints")
    if resume:
        log.info("rank %d resuming from %s", trainer.global_rank, resume)
    try:
        trainer.fit(module, datamodule=build_datamodule(cfg), ckpt_path=resume)
    except BaseException:
        end_local_ranks(trainer)
        raise
    return directory
