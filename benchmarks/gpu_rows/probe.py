"""How the GPU check times the paper step from inside the fit: :class:`TimedLoader` records
how long the loop waited for each batch, :class:`StepProbe` takes a clock reading at the
start of each timed step, times the simulation and counts the syncs of the steps after."""

from __future__ import annotations

import time

import lightning as L
import torch
from harness import stopwatch, sync
from lightning.pytorch.callbacks import Callback
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data import DataLoader

from pixperfect.training.syncs import SyncCount, count_syncs


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
