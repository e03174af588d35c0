"""The logging side of the training module: which steps log, the step's scalars (collected
on the device and read on the host once: step_scalars.py) with the skip counts, learning
rates and memory, the rank monitor's ``time/*`` (monitor.py), the data's skipped-corrupt
counts, and the image grids.

:class:`StepLogging` is the base class of ``RefinerModule`` (training/module.py), which
does the optimisation; the state these hooks use is set in ``RefinerModule.__init__``
(annotated on the class).
"""

from __future__ import annotations

try:
    import resource  # POSIX: the host memory log
except ImportError:  # pragma: no cover - Windows
    resource = None

import lightning as L
import torch
from omegaconf import DictConfig

from pixperfect.shards.format import to_float
from pixperfect.training.corpus_stream import BY_REASON, skipped_scalars
from pixperfect.training.cost import measure_step_cost
from pixperfect.training.diagnostics import Diagnostics
from pixperfect.training.guard import SkipLedger
from pixperfect.training.monitor import RankMonitor, peak_flops
from pixperfect.training.objective import GeneratorTerms
from pixperfect.training.step_scalars import StepScalars, write_scalars
from pixperfect.training.visuals import comparison_grid, grid_indices, should_log_images

SKIP_COUNTS = "_skip_counts"  # the skip ledger's counts, read with the step's scalars


class StepLogging(L.LightningModule):
    """What a training step logs and when; the training module's optimisation is elsewhere
    (:class:`~pixperfect.training.module.RefinerModule`)."""

    # Set by RefinerModule.__init__.
    cfg: DictConfig
    diagnostics: Diagnostics
    skipped_steps: torch.Tensor
    monitor: RankMonitor | None
    last_logged: dict[str, float]
    _flops_per_image: float | None
    _peak_flops: float | None
    _skipped: dict[int, int]
    _by_reason: dict[int, torch.Tensor]
    _d_optimizer: torch.optim.Optimizer | None
    _skips: SkipLedger
    _scalars: StepScalars
    _step_at_start: int | None

    def _start_monitor(self) -> None:
        """The step timer (training/monitor.py); with a known or given peak, the FLOPs per
        image for time/mfu (training/cost.py's probe, measured on rank 0, which logs)."""
        trainer = self.cfg.trainer
        self.monitor = RankMonitor(self.device, trainer.log_every_n_steps)
        self._peak_flops = peak_flops(self.device, trainer.precision, trainer.peak_tflops)
        if self._peak_flops is not None and self.global_rank == 0:
            self._flops_per_image = measure_step_cost(self.cfg).flops_per_image

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._step_at_start = self.global_step
        self._mark("batch_start")

    def _mark(self, name: str) -> None:
        if self.monitor is not None:
            self.monitor.mark(name)

    def _logs_this_step(self) -> bool:
        """Whether the scalars of this training step reach the logger (every
        ``trainer.log_every_n_steps``, counted as Lightning counts its logging steps): values
        only logs need are computed then only. The same answer on every rank, and the same
        from the batch's start to its end (the generator's step moves ``global_step``)."""
        trainer = self._trainer
        if trainer is None or not trainer.loggers or trainer.log_every_n_steps <= 0:
            return False
        return (self._batch_step() + 1) % trainer.log_every_n_steps == 0

    def _batch_step(self) -> int:
        """``global_step`` when this batch began (the step Lightning logs a batch at), or
        the current one outside a batch."""
        return self.global_step if self._step_at_start is None else self._step_at_start

    def _log_step(
        self, batch: dict, refined: torch.Tensor, terms: GeneratorTerms, step: int
    ) -> None:
        """Learning rates, memory and the diagnostics on logging steps, and (every
        ``image_every_n_steps``) the image grids; the step's times are the monitor's
        (on_train_batch_end)."""
        if self._logs_this_step():
            self._log_rates_and_memory()
            self._scalars.put_all(self.diagnostics.training_scalars(batch, refined))
        if self.global_rank == 0 and should_log_images(
            step + 1, self.cfg.trainer.image_every_n_steps
        ):
            self._log_grid("train/images", batch, refined, step + 1)
            if terms.tone is not None:
                tone = {**batch, "target": terms.tone.target}
                self._log_grid("train/tone_mapped", tone, terms.tone.pred, step + 1)

    def _log_rates_and_memory(self) -> None:
        """Both learning rates (the discriminator's Adam is outside Lightning, so no callback
        sees it), the peak CUDA memory and this process's peak host memory: host numbers."""
        put = self._scalars.put
        put("lr/generator", float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        if self._d_optimizer is not None:
            put("lr/discriminator", float(self._d_optimizer.param_groups[0]["lr"]))
        if self.device.type == "cuda":
            put("memory/peak_gib", torch.cuda.max_memory_allocated(self.device) / 2**30)
            put("memory/peak_reserved_gib", torch.cuda.max_memory_reserved(self.device) / 2**30)
        if resource is not None:  # ru_maxrss: KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            put("memory/host_peak_rss_gib", peak / 2**20)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Shard batches carry their worker's id and running count of skipped corrupt data:
        read here, on the host, before the batch goes to the device (read there, each value
        would make the host wait for the GPU). Its ``families`` go to the diagnostics."""
        self.diagnostics.take_families(batch)
        if isinstance(batch, dict) and "corrupt_skipped" in batch:
            worker = int(batch.pop("worker_id"))
            self._skipped[worker] = int(batch.pop("corrupt_skipped"))
            if BY_REASON in batch:  # a corpus batch: its worker's skips per reason
                self._by_reason[worker] = batch.pop(BY_REASON)
        return batch

    def _log_corrupt_skipped(self) -> None:
        """The sum over this rank's workers, then over ranks, on the steps that are logged
        only: the sum over ranks is one collective of every count."""
        if not self._skipped or not self._logs_this_step():
            return
        counts = {"data/corrupt_skipped": float(sum(self._skipped.values()))}
        counts.update(skipped_scalars(self._by_reason))
        values = torch.tensor(list(counts.values()), device=self.device)
        values = self.trainer.strategy.reduce(values, reduce_op="sum")
        self._scalars.put_all(dict(zip(counts, values, strict=True)))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Close the batch in the monitor; on a logging step, read the step's scalars (one
        read: step_scalars.py) and write them, and report skipped steps."""
        if self.monitor is not None:
            has_images = isinstance(batch, dict) and "target" in batch
            self.monitor.end_batch(batch["target"].shape[0] if has_images else 0)
        if self._logs_this_step():
            self._write_step_scalars()
        self._step_at_start = None

    def _write_step_scalars(self) -> None:
        """The step's scalars, the skip counts (every logging step, so the curve exists,
        flat at 0, before anything goes wrong) and the monitor's ``time/*`` over every rank
        and step of the window (a collective), read together and written at the step
        Lightning writes its own training logs."""
        self._scalars.put("train/skipped_steps", self.skipped_steps.float())
        if self._skips.counts is not None:
            self._scalars.put(SKIP_COUNTS, self._skips.counts)
        if self.monitor is not None:
            self._scalars.put_all(self.monitor.reduce(self._flops_per_image, self._peak_flops))
        values = self._scalars.read()
        counts = values.pop(SKIP_COUNTS, None)
        for message in self._skips.report(self.global_step, counts):
            self.print(message)
        self.last_logged = values
        write_scalars(self.loggers, values, self._batch_step())

    def on_validation_end(self) -> None:
        # The next training step waits for its batch from now, not from before validation.
        if self.monitor is not None:
            self.monitor.restart_data_clock()

    def _log_fixed_val_grid(self) -> bool:
        """val/images from the same validation samples at every validation (one per
        artifact-family combination first: visuals.grid_indices), refined on rank 0 whatever
        rank's share they are in; False when the datamodule keeps no list of its samples."""
        samples = getattr(getattr(self.trainer, "datamodule", None), "val_samples", None)
        if not samples:
            return False
        chosen = [samples[i] for i in grid_indices([s.get("families", "") for s in samples])]
        batch = {
            key: torch.stack([s[key] for s in chosen]).to(self.device)
            for key in ("composite", "mask", "target")
        }
        batch = to_float(batch)
        refined = self.evaluation_generator()(batch["composite"], batch["mask"])
        self._log_grid("val/images", batch, refined, self.global_step, max_rows=len(chosen))
        return True

    def _log_grid(
        self, tag: str, batch: dict, refined: torch.Tensor, step: int, max_rows: int = 4
    ) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        grid = comparison_grid(
            batch["composite"], refined, batch["target"], batch["mask"], max_rows=max_rows
        )
        experiment.add_image(tag, grid, global_step=step)
