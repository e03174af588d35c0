"""RefinerModule: the LightningModule that owns the refiner, the on-device artifact
simulation, the losses and the validation metrics."""

from __future__ import annotations

import copy
import time

import lightning as L
import torch
from omegaconf import DictConfig

from data_sim.sampling import derive_seed
from data_sim.simulator import ArtifactSimulator
from pixperfect.config import from_container, sim_config
from pixperfect.metrics import SeamMetrics
from pixperfect.models import build_refiner
from pixperfect.shards.format import to_float
from pixperfect.training.visuals import comparison_grid, should_log_images


class RefinerModule(L.LightningModule):
    def __init__(self, config: dict) -> None:
        super().__init__()
        # The resolved config travels inside every checkpoint: refine/evaluate rebuild from it.
        self.save_hyperparameters({"config": config})
        self.cfg: DictConfig = from_container(config)
        model_cfg = dict(self.cfg.model)
        self.generator = build_refiner(model_cfg.pop("name"), **model_cfg)
        # EMA of the generator only (not of the whole module): validated, checkpointed and
        # used by refine; saved in the state dict under ``generator_ema.``.
        self.generator_ema = (
            copy.deepcopy(self.generator).requires_grad_(False)
            if self.cfg.optim.ema_decay > 0
            else None
        )
        self.simulator = ArtifactSimulator(sim_config(self.cfg))
        self.val_metrics = SeamMetrics(band_width=self.cfg.eval.band_width)
        self._last_batch_end: float | None = None
        self._skipped: dict[int, int] = {}  # worker id -> corrupt samples/shards skipped

    def forward(self, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.generator(composite, mask)

    def evaluation_generator(self) -> torch.nn.Module:
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * weights, with d warming up from 0 so early steps count."""
        if self.generator_ema is None:
            return
        step = self.global_step
        decay = min(self.cfg.optim.ema_decay, (1 + step) / (10 + step))
        for ema, live in zip(
            self.generator_ema.parameters(), self.generator.parameters(), strict=True
        ):
            ema.lerp_(live, 1 - decay)

    def with_artifacts(self, batch: dict) -> dict:
        """Simulate artifacts on the device when the batch holds clean targets only."""
        if "composite" in batch:
            return batch
        # One seed per (run seed, step, rank): reproducible, and new after a resume.
        seed = derive_seed(self.cfg.run.seed, self.global_step, self.global_rank)
        simulated, _ = self.simulator(batch["target"], torch.Generator().manual_seed(seed))
        return simulated

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        start = time.perf_counter()
        if self._last_batch_end is not None:
            self.log("time/data_s", start - self._last_batch_end)
        self._count_skipped(batch)
        batch = self.with_artifacts(to_float(batch))
        self.log("time/simulation_s", time.perf_counter() - start)
        refined = self(batch["composite"], batch["mask"])
        terms = self.loss_terms(refined.float(), batch["target"])
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss")
        loss = terms["loss"]
        step = self.global_step + 1
        if self.global_rank == 0 and should_log_images(step, self.cfg.trainer.image_every_n_steps):
            self._log_grid("train/images", batch, refined, step)
        return loss

    def _count_skipped(self, batch: dict) -> None:
        """Shard batches carry their worker's running count of skipped corrupt data; the sum
        over this rank's workers (and then over ranks) goes to TensorBoard."""
        if "corrupt_skipped" not in batch:
            return
        worker = int(batch.pop("worker_id"))
        self._skipped[worker] = int(batch.pop("corrupt_skipped"))
        total = torch.tensor(float(sum(self._skipped.values())), device=self.device)
        self.log("data/corrupt_skipped", total, reduce_fx="sum", sync_dist=True)

    def loss_terms(self, refined: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term by name, and their sum as ``loss``."""
        weights = {"l1": self.cfg.loss.l1, "mse": self.cfg.loss.mse}
        error = refined - target
        terms = {}
        if weights["l1"]:
            terms["l1"] = error.abs().mean()
        if weights["mse"]:
            terms["mse"] = error.square().mean()
        terms["loss"] = sum(weights[name] * value for name, value in terms.items())
        return terms

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.update_ema()
        self._last_batch_end = time.perf_counter()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        batch = self.with_artifacts(to_float(batch))
        refined = self.evaluation_generator()(batch["composite"], batch["mask"])
        self.val_metrics.update(refined, batch["target"], batch["mask"])
        if batch_idx == 0 and self.global_rank == 0:
            self._log_grid("val/images", batch, refined, self.global_step)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, sync_dist=False)
        self.val_metrics.reset()

    def _log_grid(self, tag: str, batch: dict, refined: torch.Tensor, step: int) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        grid = comparison_grid(batch["composite"], refined, batch["target"], batch["mask"])
        experiment.add_image(tag, grid, global_step=step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.Adam(
            self.generator.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay
        )
