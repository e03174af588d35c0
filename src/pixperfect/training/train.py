"""``pixperfect train``: a run directory named from the config, a Lightning Trainer, resume.

runs/<run.name>/
  config.yaml            the resolved config of the latest launch
  checkpoints/last.ckpt  the newest checkpoint (resumed from automatically)
  checkpoints/step=N.ckpt
  tb/                    TensorBoard logs
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from data_sim.simulator import describe
from pixperfect.config import to_yaml
from pixperfect.data.datamodule import build_datamodule
from pixperfect.sheets import contact_sheet, simulate_sheet
from pixperfect.training.module import RefinerModule

log = logging.getLogger(__name__)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.root) / cfg.run.name


class SaveLastOnTrainEnd(Callback):
    """``last.ckpt`` at the end of every fit, whatever the checkpoint cadence: the next launch
    of the same command resumes exactly where this one stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


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


def _warn_on_config_change(saved: Path, cfg: DictConfig) -> None:
    if not saved.exists():
        return
    old, new = OmegaConf.load(saved), cfg
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


def build_trainer(cfg: DictConfig, directory: Path) -> L.Trainer:
    t = cfg.trainer
    checkpoints = directory / "checkpoints"
    return L.Trainer(
        default_root_dir=directory,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=TensorBoardLogger(str(directory), name="tb", version=""),
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="{step}",
                every_n_train_steps=t.ckpt_every_n_steps,
                save_top_k=-1,
            ),
            SaveLastOnTrainEnd(checkpoints / "last.ckpt"),
            ContactSheet(directory / "contact_sheet.png"),
            LearningRateMonitor(logging_interval="step"),
        ],
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
    )


def train(cfg: DictConfig) -> Path:
    """Train (or resume) the run the config names; returns the run directory."""
    if cfg.data.source == "shards":
        # Refuse before launch: a worker without a shard of its own would starve its rank.
        from pixperfect.shards.reader import check_enough_shards

        t = cfg.trainer
        devices = t.devices if isinstance(t.devices, int) and t.devices > 0 else 1
        check_enough_shards(cfg.data.shards, cfg.data.num_workers, devices * t.num_nodes)
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    _warn_on_config_change(directory / "config.yaml", cfg)
    (directory / "config.yaml").write_text(to_yaml(cfg))

    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, directory)
    last = directory / "checkpoints" / "last.ckpt"
    resume = last if last.exists() else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(module, datamodule=build_datamodule(cfg), ckpt_path=resume)
    return directory
