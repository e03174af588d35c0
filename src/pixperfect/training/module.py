"""RefinerModule: the LightningModule that owns the refiner (and its EMA), the discriminator,
the on-device artifact simulation, the optimisation steps and the validation metrics.

Manual optimisation: one generator step and then (with an adversarial term) one
discriminator step per batch. ``global_step`` counts generator steps: the discriminator's
Adam is stepped directly, so ``trainer.max_steps``, warm-ups and the EMA are all in
generator steps; its state and step count are saved in the checkpoint by hand. A step whose
loss is not finite on any rank is skipped on every rank and counted (``train/skipped_steps``).
"""

from __future__ import annotations

import copy
import time

import lightning as L
import torch
from omegaconf import DictConfig
from torchmetrics import MeanMetric

from data_sim.sampling import derive_seed
from data_sim.simulator import ArtifactSimulator
from pixperfect.config import from_container, sim_config
from pixperfect.losses import discriminator_loss, r1_due, r1_penalty
from pixperfect.metrics import SeamMetrics
from pixperfect.models import build_discriminator, build_refiner
from pixperfect.shards.format import to_float
from pixperfect.training.objective import Objective
from pixperfect.training.visuals import comparison_grid, should_log_images


def average_gradients_across_ranks(parameters) -> None:
    """All-reduce (mean) the gradients of ``parameters`` in one flat buffer; no-op in one
    process. For modules outside DDP's reducer (the discriminator)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    grads = [p.grad for p in parameters if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


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
        self.objective = Objective(self.cfg)
        g = self.cfg.gan
        self.discriminator = (
            build_discriminator(g.discriminator, base_channels=g.base_channels, n_down=g.n_down)
            if self.objective.adversarial
            else None
        )
        if self.discriminator is not None:
            # Frozen except inside its own step. This also keeps it out of DDP's reducer
            # (built from parameters that require grad at setup): DDP syncs gradients in
            # the first backward after a forward only, which is the generator's, so the
            # discriminator's gradients are averaged across ranks by hand instead.
            self.discriminator.requires_grad_(False)
        self.automatic_optimization = False
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self.val_metrics = SeamMetrics(band_width=self.cfg.eval.band_width)
        # LPIPS in validation only when its weights were found (the objective built it).
        self.val_lpips = MeanMetric() if self.objective.lpips is not None else None
        self._last_batch_end: float | None = None
        self._skipped: dict[int, int] = {}  # worker id -> corrupt samples/shards skipped
        self._d_optimizer: torch.optim.Optimizer | None = None
        self._d_state: dict | None = None  # restored before the optimiser exists
        self._d_steps = 0

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
        # Simulation stays in float32 under mixed precision (autocast is for the networks).
        with torch.autocast(self.device.type, enabled=False):
            simulated, _ = self.simulator(
                batch["target"].float(), torch.Generator().manual_seed(seed)
            )
        return simulated

    def on_fit_start(self) -> None:
        self.objective.to(self.device)
        if self.objective.lpips_disabled and self.global_rank == 0:
            experiment = getattr(self.logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_text"):
                experiment.add_text(
                    "warnings", "LPIPS weights missing: training WITHOUT the LPIPS terms"
                )

    def _all_finite(self, value: torch.Tensor) -> bool:
        """True when ``value`` is finite on every rank (all ranks must skip together, or the
        ones that step wait for the others in the gradient all-reduce)."""
        bad = (~torch.isfinite(value.detach())).float().sum()
        return float(self.trainer.strategy.reduce(bad, reduce_op="sum")) == 0

    def _skip(self, what: str) -> None:
        self.skipped_steps += 1  # logged at the end of every batch (on_train_batch_end)
        self.print(f"step {self.global_step}: non-finite {what} loss, step skipped")

    def training_step(self, batch: dict, batch_idx: int) -> None:
        start = time.perf_counter()
        if self._last_batch_end is not None:
            self.log("time/data_s", start - self._last_batch_end)
        self._log_corrupt_skipped()
        batch = self.with_artifacts(to_float(batch))
        self.log("time/simulation_s", time.perf_counter() - start)
        step = self.global_step
        # One generator per step on the device for the tone-curve fits and instance noise,
        # seeded the same on every rank (-1: no rank): each draw is made for the global batch
        # and this rank keeps its rows (rank, world below), so the draws do not depend on
        # how the batch is split (pixperfect.losses.randomness).
        generator = torch.Generator(device=self.device).manual_seed(
            derive_seed(self.cfg.run.seed, step, -1, 1)
        )
        shard = {"rank": self.global_rank, "world": self.trainer.world_size}
        self._stepped = False
        g_opt = self.optimizers()
        target, mask = batch["target"], batch["mask"]
        d = self.discriminator
        refined = self(batch["composite"], mask)
        terms, extras = self.objective.generator_terms(
            refined.float(), target, mask, step, generator, d, **shard
        )
        if not self._all_finite(terms["loss"]):
            g_opt.zero_grad()
            return self._skip("generator")
        g_opt.zero_grad()
        self.manual_backward(terms["loss"])
        if self.cfg.optim.grad_clip > 0:
            self.clip_gradients(
                g_opt, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm"
            )
        g_opt.step()
        self._stepped = True
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss")
        if "fake_logits" in extras:
            self.log("d/logits_fake_g", extras["fake_logits"].float().mean())
        if d is not None and step >= self.cfg.gan.warmup_steps:
            d.requires_grad_(True)
            try:
                self._discriminator_step(batch, refined.detach(), extras, generator)
            finally:
                d.requires_grad_(False)
        seconds = time.perf_counter() - start
        self.log("time/step_s", seconds)
        self.log("time/images_per_s", target.shape[0] / seconds)
        if self.device.type == "cuda":
            self.log("memory/peak_gib", torch.cuda.max_memory_allocated(self.device) / 2**30)
        if self.global_rank == 0 and should_log_images(
            step + 1, self.cfg.trainer.image_every_n_steps
        ):
            self._log_grid("train/images", batch, refined, step + 1)
            if "tone_pred" in extras:
                tone = {**batch, "composite": batch["composite"], "target": extras["tone_target"]}
                self._log_grid("train/tone_mapped", tone, extras["tone_pred"], step + 1)

    def _discriminator_step(
        self, batch: dict, refined: torch.Tensor, extras: dict, generator: torch.Generator
    ) -> None:
        g, d = self.cfg.gan, self.discriminator
        target, mask = batch["target"], batch["mask"]
        # Noise draws for the global batch, in the same order on every rank: real, fake,
        # tone-mapped real, tone-mapped fake, R1's real.
        shard = {"rank": self.global_rank, "world": self.trainer.world_size}
        parts = discriminator_loss(
            d,
            target,
            refined,
            mask,
            band=g.band,
            noise_sigma=g.instance_noise,
            generator=generator,
            **shard,
        )
        loss = parts.loss.float()
        if self.objective.weights["tone_adversarial"] and "tone_pred" in extras:
            # One discriminator for both spaces: it also learns tone-mapped reals and fakes.
            tone = discriminator_loss(
                d,
                extras["tone_target"],
                extras["tone_pred"],
                mask,
                band=g.band,
                noise_sigma=g.instance_noise,
                generator=generator,
                **shard,
            )
            loss = loss + tone.loss.float()
        if r1_due(self._d_steps, g.r1_every) and g.r1_gamma > 0:
            r1 = r1_penalty(
                d,
                target,
                mask,
                gamma=g.r1_gamma,
                every=g.r1_every,
                noise_sigma=g.instance_noise,
                generator=generator,
                **shard,
            )
            self.log("d/r1", r1.detach())
            loss = loss + r1
        if not self._all_finite(loss):
            self._d_optimizer.zero_grad()
            return self._skip("discriminator")
        self._d_optimizer.zero_grad()
        self.manual_backward(loss)
        average_gradients_across_ranks(d.parameters())
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(d.parameters(), self.cfg.optim.grad_clip)
        self._d_optimizer.step()
        self._d_steps += 1
        self.log("d/loss", loss.detach())
        self.log("d/logits_real", parts.real_logits.float().mean())
        self.log("d/logits_fake", parts.fake_logits.float().mean())

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Shard batches carry their worker's id and running count of skipped corrupt data:
        read here, on the host, before the batch goes to the device (read there, each value
        would make the host wait for the GPU)."""
        if isinstance(batch, dict) and "corrupt_skipped" in batch:
            self._skipped[int(batch.pop("worker_id"))] = int(batch.pop("corrupt_skipped"))
        return batch

    def _log_corrupt_skipped(self) -> None:
        """The sum over this rank's workers, then over ranks, on the steps that are logged
        only: the sum over ranks is a collective."""
        if not self._skipped or not self.trainer._logger_connector.should_update_logs:
            return
        total = torch.tensor(float(sum(self._skipped.values())), device=self.device)
        self.log("data/corrupt_skipped", total, reduce_fx="sum", sync_dist=True)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if getattr(self, "_stepped", False):
            self.update_ema()
        # Every batch, so the curve exists (flat at 0) before anything goes wrong.
        self.log("train/skipped_steps", self.skipped_steps.float())
        self._last_batch_end = time.perf_counter()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        batch = self.with_artifacts(to_float(batch))
        refined = self.evaluation_generator()(batch["composite"], batch["mask"])
        self.val_metrics.update(refined, batch["target"], batch["mask"])
        if self.val_lpips is not None:
            self.val_lpips.update(self.objective.lpips(refined, batch["target"]).flatten())
        if batch_idx == 0 and self.global_rank == 0:
            self._log_grid("val/images", batch, refined, self.global_step)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()  # torchmetrics: synced across ranks
        if self.val_lpips is not None:
            scores["lpips"] = self.val_lpips.compute()
            self.val_lpips.reset()
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, sync_dist=False)
        self.val_metrics.reset()

    def _log_grid(self, tag: str, batch: dict, refined: torch.Tensor, step: int) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        grid = comparison_grid(batch["composite"], refined, batch["target"], batch["mask"])
        experiment.add_image(tag, grid, global_step=step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o, g = self.cfg.optim, self.cfg.gan
        if self.discriminator is not None:
            self._d_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=g.lr, betas=tuple(g.betas)
            )
            if self._d_state is not None:
                self._d_optimizer.load_state_dict(self._d_state)
                self._d_state = None
        return torch.optim.Adam(
            self.generator.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._d_optimizer is not None:
            checkpoint["discriminator_optimizer"] = self._d_optimizer.state_dict()
            checkpoint["discriminator_steps"] = self._d_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before configure_optimizers on resume: keep the state until it exists.
        self._d_state = checkpoint.get("discriminator_optimizer")
        self._d_steps = checkpoint.get("discriminator_steps", 0)
