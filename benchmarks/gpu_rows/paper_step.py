"""Rows 1 and 5 of the GPU check: the paper step trained by a real ``lightning.Trainer``,
timed by a callback (images/s, peak memory, data-wait and simulation shares) and, in the
steps after the timed ones, its host-device syncs counted. Row 4 (DDP) runs the same fit."""

from __future__ import annotations

import time
from collections import Counter

import lightning as L
import torch
from harness import stopwatch, sync
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data import DataLoader

from data_sim.sampling import derive_seed
from pixperfect.shards.build import load_source
from pixperfect.training.datamodule import RandomCropStream
from pixperfect.training.module import RefinerModule
from pixperfect.training.syncs import SyncCount, count_syncs

from .rows import Row, fmt, log
from .setup import WARMUP, Setup


class TimedLoader(DataLoader):
    """A DataLoader that records, for each batch the training loop asks for, when it asked
    and how long it waited (``waits``: (start, seconds))."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waits: list[tuple[float, float]] = []

    def __iter__(self):
        return _TimedIterator(super().__iter__(), self.waits)


class _TimedIterator:
    def __init__(self, iterator, waits: list[tuple[float, float]]) -> None:
        self.iterator, self.waits = iterator, waits

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.iterator)
        self.waits.append((start, time.perf_counter() - start))
        return batch


class StepProbe(Callback):
    """Clock readings at the start of steps ``warmup .. warmup + timed`` (synchronised on
    CUDA), the simulation time inside the timed steps (``with_artifacts`` wrapped,
    synchronised before and after) and the syncs of ``counted`` steps after them
    (``training_step`` wrapped in :func:`count_syncs`, the simulation's share counted
    apart too). Steps are counted by batches the
    loop starts, so a skipped step does not shift the windows."""

    def __init__(self, warmup: int, timed: int, counted: int) -> None:
        self.warmup, self.timed, self.counted = warmup, timed, counted
        self.iteration = -1
        self.starts: list[float] = []
        self.simulation: list[float] = []
        self.syncs: list[SyncCount] = []  # per counted step
        self.simulation_syncs: list[SyncCount] = []  # the part in with_artifacts
        self.optimizer_syncs: list[SyncCount] = []  # the part in optimizer.step (G and D)
        self._open: list = []  # count_syncs blocks opened by the optimizer pre-step hook
        self._hooks: list = []
        self.device = torch.device("cpu")

    def _timing(self) -> bool:
        return self.warmup <= self.iteration < self.warmup + self.timed

    def _counting(self) -> bool:
        first = self.warmup + self.timed
        return first <= self.iteration < first + self.counted

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.device = pl_module.device
        step, simulate = pl_module.training_step, pl_module.with_artifacts

        def with_artifacts(batch):
            if self._counting():
                with count_syncs(self.device) as counted:
                    out = simulate(batch)
                self.simulation_syncs.append(counted)
                return out
            if not self._timing():
                return simulate(batch)
            with stopwatch(self.device) as elapsed:
                out = simulate(batch)
            self.simulation.append(elapsed.seconds)
            return out

        def training_step(*args, **kwargs):
            if not self._counting():
                return step(*args, **kwargs)
            with count_syncs(self.device) as counted:
                out = step(*args, **kwargs)
            self.syncs.append(counted)
            return out

        def before_optimizer_step(optimizer, args, kwargs):
            if self._counting():
                block = count_syncs(self.device)
                self._open.append((block, block.__enter__()))

        def after_optimizer_step(optimizer, args, kwargs):
            if self._open:
                block, counted = self._open.pop()
                block.__exit__(None, None, None)
                self.optimizer_syncs.append(counted)

        # Instance attributes: the module's own methods run inside; removed at the end.
        pl_module.with_artifacts = with_artifacts
        pl_module.training_step = training_step
        self._hooks = [
            register_optimizer_step_pre_hook(before_optimizer_step),
            register_optimizer_step_post_hook(after_optimizer_step),
        ]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove(pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        while self._open:  # a step raised inside optimizer.step
            block, _ = self._open.pop()
            block.__exit__(type(exception), exception, exception.__traceback__)
        self._remove(pl_module)

    def _remove(self, pl_module: L.LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for name in ("with_artifacts", "training_step"):
            pl_module.__dict__.pop(name, None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.iteration += 1
        if self.warmup <= self.iteration <= self.warmup + self.timed:
            sync(self.device)
            self.starts.append(time.perf_counter())


def run_paper_step(
    cfg: DictConfig,
    sources: list[str],
    warmup: int,
    timed: int,
    counted: int,
    devices: int = 1,
    strategy: str = "auto",
) -> dict:
    """Train ``warmup + timed + max(counted, 1)`` steps; the figures of :class:`StepProbe`
    (on rank 0 under DDP: every rank keeps the same pace)."""
    torch.manual_seed(cfg.run.seed)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    probe = StepProbe(warmup, timed, counted)
    cuda = cfg.trainer.accelerator == "gpu"
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=devices,
        strategy=strategy,
        precision=cfg.trainer.precision,
        max_steps=cfg.trainer.max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        callbacks=[probe],
    )
    images = [load_source(s) for s in sources]
    stream = RandomCropStream(
        images, cfg.data.crop_size, derive_seed(cfg.run.seed, trainer.global_rank)
    )
    workers = cfg.data.num_workers
    loader = TimedLoader(
        stream,
        batch_size=cfg.data.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=cuda,
    )
    peak = cuda and devices == 1  # devices=1: Lightning trains on cuda:0
    if peak:
        torch.cuda.reset_peak_memory_stats(0)
    trainer.fit(module, train_dataloaders=loader)
    intervals = [b - a for a, b in zip(probe.starts, probe.starts[1:], strict=False)]
    if len(intervals) != timed:
        raise RuntimeError(f"timed {len(intervals)} steps, expected {timed}")
    total = sum(intervals)
    first, last = probe.starts[0], probe.starts[-1]
    waited = sum(s for t, s in loader.waits if first <= t < last)
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "batch_size": cfg.data.batch_size,
        "timed_steps": timed,
        "step_s": total / timed,
        "images_per_s_per_device": cfg.data.batch_size * timed / total,
        "data_wait_share": waited / total,
        "simulation_share": sum(probe.simulation) / total,
        "syncs_per_step": (
            sum(c.total for c in probe.syncs) / len(probe.syncs) if probe.syncs else None
        ),
        "sync_method": probe.syncs[0].method if probe.syncs else None,
        "syncs_by_op": dict(sum((c.by_op for c in probe.syncs), start=Counter())),
        "simulation_syncs_per_step": (
            sum(c.total for c in probe.simulation_syncs) / len(probe.syncs) if probe.syncs else None
        ),
        "optimizer_syncs_per_step": (
            sum(c.total for c in probe.optimizer_syncs) / len(probe.syncs) if probe.syncs else None
        ),
        "skipped_steps": int(module.skipped_steps),
        "lpips_on": module.objective.lpips is not None,
        # probe.device: Lightning moves the module back to the CPU when the fit ends.
        "peak_gib": torch.cuda.max_memory_allocated(probe.device) / 2**30 if peak else None,
    }
    return result


def paper_step_rows(run: Setup) -> tuple[list[Row], Row]:
    """Rows 1 and 5: both come from one fit."""
    where = "GPU" if run.cuda else "CPU process"
    if run.cuda:
        sync_label = "host-device syncs per training step (set_sync_debug_mode)"
    else:
        sync_label = (
            "host reads of tensor values per step (item/bool/nonzero; each is a sync on CUDA)"
        )
    step_rows = [
        Row("1", "paper_images_per_s", f"paper step: images/s per {where}"),
        Row("1", "paper_peak_memory_gib", "paper step: peak memory, GiB"),
        Row("1", "paper_data_wait_share", "paper step: data-wait share, %"),
        Row("1", "paper_simulation_share", f"paper step: simulation share ({run.codec}), %"),
    ]
    return step_rows, Row("5", "syncs_per_step", sync_label)


def measure_paper_step(run: Setup, step_rows: list[Row], sync_row: Row) -> list[Row]:
    """Row 1 from the fit's timings, row 5 (``sync_row``) from its counted steps."""
    scale, cfg = run.scale, run.cfg
    log(f"[1/6] paper step: {run.steps} steps at {scale.crop} px, batch {scale.batch}")
    step = run.info["paper_step"] = run_paper_step(
        cfg, run.sources, WARMUP, scale.steps, scale.sync_steps
    )
    how = (
        f"{cfg.trainer.precision}, {scale.crop} px, batch {scale.batch}, {scale.steps} "
        f"steps timed after {WARMUP} warm-up, {step['step_s'] * 1000:.0f} ms/step"
    )
    workers = f"{cfg.data.num_workers} workers, photos in memory"
    values = [
        (step["images_per_s_per_device"], how, ""),
        (step["peak_gib"], "torch.cuda.max_memory_allocated over the fit", "no CUDA"),
        (100 * step["data_wait_share"], f"blocked in DataLoader next(), {workers}", ""),
        (100 * step["simulation_share"], "RefinerModule.with_artifacts, synchronised", ""),
    ]
    for row, (value, note, skipped) in zip(step_rows, values, strict=True):
        row.value, row.note = value, note
        row.skipped = skipped if value is None else ""
    if not step["lpips_on"]:
        run.notes.append(
            "LPIPS terms OFF in the paper step: no LPIPS weights (--lpips-weights DIR); "
            "the paper's step also runs AlexNet-LPIPS in both spaces"
        )
    if step["skipped_steps"]:
        run.notes.append(f"paper step: {step['skipped_steps']} step(s) skipped (non-finite loss)")
    if step["syncs_per_step"] is None:
        sync_row.skipped = "--sync-steps 0"
        return step_rows
    sync_row.note = sync_note(run, step)
    sync_row.value = step["syncs_per_step"]
    return step_rows


def sync_note(run: Setup, step: dict) -> str:
    """Where row 5's syncs happen: in the simulation, in optimizer.step, elsewhere."""
    total = step["syncs_per_step"]
    in_sim, in_opt = step["simulation_syncs_per_step"], step["optimizer_syncs_per_step"]
    elsewhere = total - in_sim - in_opt
    if run.cuda:
        return (
            f"{run.scale.sync_steps} steps; in the simulation {fmt(in_sim)}, in "
            f"optimizer.step {fmt(in_opt)}, elsewhere {fmt(elsewhere)}; a lower bound "
            "(pixperfect.training.syncs)"
        )
    ops = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in sorted(step["syncs_by_op"].items()))
    return (
        f"{run.scale.sync_steps} steps; in the simulation {fmt(in_sim)} (its parameters "
        f"are drawn on the CPU, on a GPU too), in optimizer.step {fmt(in_opt)} (Adam's "
        f"step counts, CPU tensors on a GPU too), elsewhere {fmt(elsewhere)}; "
        f"totals: {ops}"
    )
