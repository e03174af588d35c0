"""RefinerModule: the LightningModule that owns the refiner (and its EMA), the discriminator,
the on-device artifact simulation, the optimisation steps and the validation metrics.

Manual optimisation: one generator step and then (with an adversarial term) one
discriminator step per batch. ``global_step`` counts generator steps: the discriminator's
Adam is stepped directly, so ``trainer.max_steps``, warm-ups and the EMA are all in
generator steps; its state and step count are saved in the checkpoint by hand. A step whose
loss is not finite on any rank is undone on every rank, decided on the device, and counted
(``train/skipped_steps``; training/guard.py: the policy, and why ``global_step`` and
``max_steps`` count it as a step).

The loss of both networks is the :class:`~pixperfect.training.objective.Objective`'s; this
module orchestrates: optimisers, manual backward, the cross-rank non-finite guard, the
discriminator's gradient average and the EMA; the logs are its base class's
(training/step_logging.py: which steps log, the step's scalars, image grids, times). The
step's parts are public methods (``with_artifacts``, ``generator_forward``,
``generator_update``, ``discriminator_step``, ``update_ema``) so that
``benchmarks/bench_train.py`` times this step, not a copy of it.
"""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig
from torchmetrics import MeanMetric

from data_sim.sampling import derive_seed
from data_sim.simulator import ArtifactSimulator
from pixperfect.config import from_container, sim_config
from pixperfect.metrics import SeamMetrics
from pixperfect.models import build_discriminator, build_refiner
from pixperfect.shards.format import to_float
from pixperfect.training.diagnostics import ADAM_EPS, Diagnostics, gradient_scalars
from pixperfect.training.fast_paths import adam_kernel, apply_fast_paths, ema_update
from pixperfect.training.guard import SkipLedger, masked_step, nonfinite_anywhere
from pixperfect.training.monitor import RankMonitor
from pixperfect.training.objective import GeneratorTerms, Objective
from pixperfect.training.schedule import learning_rate
from pixperfect.training.step_logging import StepLogging
from pixperfect.training.step_scalars import StepScalars


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


def gradient_norm(parameters) -> torch.Tensor:
    """The total L2 norm of the gradients of ``parameters`` (as ``clip_grad_norm_`` measures
    it), without clipping anything; 0 when none has a gradient."""
    norms = [
        torch.linalg.vector_norm(p.grad.detach().float()) for p in parameters if p.grad is not None
    ]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))


class RefinerModule(StepLogging):
    """The refiner, its EMA, the discriminator, the simulator, the objective and the
    validation metrics, and the steps that optimise them; what is logged and when is
    :class:`~pixperfect.training.step_logging.StepLogging`'s."""

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
        self.diagnostics = Diagnostics(self.cfg.eval.band_width)  # diag/*, grad/*, *_family/*
        # time/*: every rank's step and data-wait times over each log window (monitor.py)
        self.monitor: RankMonitor | None = None
        self._flops_per_image: float | None = None  # for time/mfu, where a peak is known
        self._peak_flops: float | None = None
        self._skipped: dict[int, int] = {}  # worker id -> corrupt samples/shards skipped
        self._by_reason: dict[int, torch.Tensor] = {}  # worker id -> corpus skips per reason
        self._d_optimizer: torch.optim.Optimizer | None = None
        self._d_state: dict | None = None  # restored before the optimiser exists
        self._d_steps = 0  # D steps taken or undone (guard.py): lazy R1's clock
        self._skips = SkipLedger()  # skipped steps per network, reported on logging steps
        self._g_skip: torch.Tensor | None = None  # this batch's G skip flag (device)
        # A logging step's scalars, read on the host once at its end (step_scalars.py)
        self._scalars = StepScalars()
        self._step_at_start: int | None = None  # global_step when this batch began
        self.last_logged: dict[str, float] = {}  # the last logging step's scalars

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
        ema_update(
            self.generator_ema.parameters(),
            self.generator.parameters(),
            1 - decay,
            foreach=self.cfg.optim.ema_foreach,
        )

    def configure_model(self) -> None:
        """The config's fast paths (training/fast_paths.py), before DDP wraps the module."""
        apply_fast_paths(self)

    def with_artifacts(self, batch: dict) -> dict:
        """Simulate artifacts on the device when the batch holds clean targets only."""
        if "composite" in batch:
            return batch
        # One seed per (run seed, step, rank): reproducible, and new after a resume.
        seed = derive_seed(self.cfg.run.seed, self.global_step, self.global_rank)
        # Simulation stays in float32 under mixed precision (autocast is for the networks).
        with torch.autocast(self.device.type, enabled=False):
            simulated, params = self.simulator(
                batch["target"].float(), torch.Generator().manual_seed(seed)
            )
        # The families' names where they are logged (a logging or validation step), or
        # asked for (no trainer)
        needed = self._trainer is None or not self.training or self._logs_this_step()
        self.diagnostics.simulated(params, simulated["target"].shape[0], needed)
        return simulated

    def on_fit_start(self) -> None:
        self.objective.to(self.device)
        self._start_monitor()
        if self.objective.lpips_disabled and self.global_rank == 0:
            experiment = getattr(self.logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_text"):
                experiment.add_text(
                    "warnings", "LPIPS weights missing: training WITHOUT the LPIPS terms"
                )

    def _nonfinite(self, value: torch.Tensor) -> torch.Tensor:
        """1 (a device tensor, never read) where ``value`` is not finite on some rank: every
        rank skips together, or the ones that step would wait for the others in the
        gradient all-reduce (training/guard.py)."""
        return nonfinite_anywhere(value, self.trainer.strategy)

    def _count_skip(self, what: str, skip: torch.Tensor) -> None:
        self.skipped_steps += skip.long()  # logged every batch, read on logging steps only
        self._skips.add(what, skip)

    def _shard(self) -> dict[str, int]:
        """This rank's place in the global batch, for the objective's random draws."""
        return {"rank": self.global_rank, "world": self.trainer.world_size}

    def step_generator(self, step: int) -> torch.Generator:
        """The step's generator on the device for the tone-curve fits and instance noise.

        Seeded the same on every rank (-1: no rank): each draw is made for the global batch
        and this rank keeps its rows, so the draws do not depend on how the batch is split
        (pixperfect.losses.randomness)."""
        seed = derive_seed(self.cfg.run.seed, step, -1, 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One generator step, then (past the GAN warm-up) one discriminator step. The parts
        are public methods so that benchmarks/bench_train.py times this very step."""
        self._log_corrupt_skipped()  # a collective on logging steps: before step_start
        self._mark("step_start")
        batch = self.with_artifacts(to_float(batch))
        self._mark("simulated")
        step = self.global_step
        generator = self.step_generator(step)
        with self.diagnostics.watch(self.generator, enabled=self._logs_this_step()):
            refined, terms = self.generator_forward(batch, step, generator)
        self._mark("presync")  # the step's first collective comes next (the finite check)
        if not self.generator_update(terms):
            return
        if self.objective.trains_discriminator(step):
            self.discriminator_step(batch, refined.detach(), terms, generator)
        self._log_step(batch, refined, terms, step)

    def generator_forward(
        self, batch: dict, step: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, GeneratorTerms]:
        """(refined images, the objective's generator terms): G's forward and its loss, with
        the discriminator frozen (it only judges the fake here)."""
        refined = self(batch["composite"], batch["mask"])
        terms = self.objective.generator_terms(
            refined.float(),
            batch["target"],
            batch["mask"],
            step,
            generator,
            self.discriminator,
            **self._shard(),
        )
        return refined, terms

    def generator_update(self, terms: GeneratorTerms) -> bool:
        """G's backward, clipping and Adam step, and the terms' logs; returns True. A loss
        that is not finite on any rank has its update undone on the device on every rank
        (training/guard.py), with no host read."""
        g_opt = self.optimizers()
        skip = self._g_skip = self._nonfinite(terms.loss)
        self._count_skip("generator", skip)
        g_opt.zero_grad()
        self.manual_backward(terms.loss)
        logs = self._logs_this_step()
        if logs:  # after DDP's all-reduce: the same norm on every rank
            self._scalars.put("grad_norm/generator", gradient_norm(self.generator.parameters()))
        if self.cfg.optim.grad_clip > 0:
            self.clip_gradients(
                g_opt, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm"
            )
        if logs:  # per level, clipped: what Adam receives
            eps = g_opt.param_groups[0].get("eps", ADAM_EPS)
            self._scalars.put_all(gradient_scalars(self.generator, eps))
        lr = learning_rate(self.cfg.optim, self.global_step, self.cfg.trainer.max_steps)
        for group in g_opt.param_groups:  # the schedule is a function of the step
            group["lr"] = lr
        masked_step(g_opt, skip)
        # Right after the step, before any callback (checkpoints) sees the batch's end: a
        # checkpoint saved at step N holds the EMA of N updates.
        self.update_ema()
        if self.cfg.trainer.progress_bar:  # only where there is one: read every batch
            self.log("train/loss", terms.loss.detach(), prog_bar=True, logger=False)
        if logs:
            self._scalars.put_all({f"train/{k}": v for k, v in terms.terms.items()})
            if terms.fake_logits is not None:
                self._scalars.put("d/logits_fake_g", terms.fake_logits.float().mean())
        return True

    def discriminator_step(
        self,
        batch: dict,
        refined: torch.Tensor,
        terms: GeneratorTerms,
        generator: torch.Generator,
    ) -> bool:
        """D's loss (the objective's discriminator terms on the detached ``refined`` and the
        generator side's tone images), backward, cross-rank gradient average, clipping and
        Adam step; returns True (a non-finite D loss on any rank, or a skipped G step,
        undoes it on the device: training/guard.py). D needs gradients only inside it."""
        d = self.discriminator
        d.requires_grad_(True)
        try:
            parts = self.objective.discriminator_terms(
                d,
                batch["target"],
                refined,
                batch["mask"],
                generator,
                tone=terms.tone,
                d_step=self._d_steps,
                **self._shard(),
            )
            logs = self._logs_this_step()
            if parts.r1 is not None and logs:
                self._scalars.put("d/r1", parts.r1)
            g_skip = getattr(self, "_g_skip", None)
            skip = self._nonfinite(parts.loss)
            if g_skip is not None:  # counted once, as G's
                skip = torch.maximum(skip, g_skip)
            self._count_skip("discriminator", skip if g_skip is None else skip - g_skip)
            self._d_optimizer.zero_grad()
            self.manual_backward(parts.loss)
            average_gradients_across_ranks(d.parameters())
            norm = None  # the total norm before clipping, which clipping measures anyway
            if self.cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(d.parameters(), self.cfg.optim.grad_clip)
            if logs:
                norm = gradient_norm(d.parameters()) if norm is None else norm
                self._scalars.put("grad_norm/discriminator", norm)
            masked_step(self._d_optimizer, skip)
        finally:
            d.requires_grad_(False)
        self._d_steps += 1
        if logs:
            self._scalars.put("d/loss", parts.loss)
            self._scalars.put("d/logits_real", parts.rgb.real_logits.float().mean())
            self._scalars.put("d/logits_fake", parts.rgb.fake_logits.float().mean())
        return True

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        batch = self.with_artifacts(to_float(batch))
        refined = self.evaluation_generator()(batch["composite"], batch["mask"])
        self.val_metrics.update(refined, batch["target"], batch["mask"])
        prior = getattr(self.generator, "colour_prior", "none")  # scored alone beside it
        self.diagnostics.update_validation(batch, refined, prior)
        if self.val_lpips is not None:
            self.val_lpips.update(self.objective.lpips(refined, batch["target"]).flatten())
        if batch_idx == 0 and self.global_rank == 0 and not self._log_fixed_val_grid():
            self._log_grid("val/images", batch, refined, self.global_step)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()  # torchmetrics: synced across ranks
        if self.val_lpips is not None:
            scores["lpips"] = self.val_lpips.compute()
            self.val_lpips.reset()
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, sync_dist=False)
        self.log_dict(self.diagnostics.validation_scalars(), sync_dist=False)  # synced
        self.val_metrics.reset()

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
            self.generator.parameters(),
            lr=o.lr,
            betas=tuple(o.betas),
            eps=o.eps,
            weight_decay=o.weight_decay,
            **adam_kernel(self.device.type, o.fused),  # fused on CUDA (optim.fused)
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._d_optimizer is not None:
            checkpoint["discriminator_optimizer"] = self._d_optimizer.state_dict()
            checkpoint["discriminator_steps"] = self._d_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before configure_optimizers on resume: keep the state until it exists.
        self._d_state = checkpoint.get("discriminator_optimizer")
        self._d_steps = checkpoint.get("discriminator_steps", 0)
