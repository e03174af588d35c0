"""The timer of benchmarks/bench_train.py: :class:`StepTimer` times the parts of the real
``RefinerModule.training_step`` while a Lightning Trainer runs it (the rows of the step
table), :func:`run_real_step` runs that Trainer, :func:`summarise` turns the records into
the table's medians."""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

import lightning as L
import torch
from harness import stopwatch, sync

from pixperfect.training.module import RefinerModule

# (row, owner, method): the public methods of the step that StepTimer times. Rows marked
# "of which" run inside the row above them and are not added to the sum of the parts.
DATA = "data (one batch, in-process loader)"
SIMULATION = "simulation (with_artifacts)"
G_FORWARD = "G forward + loss terms (generator_forward)"
TONE = "- of which tone mapping: fit + apply (forward)"
LPIPS_ROW = "- of which LPIPS forward (RGB + tone space)"
G_ADVERSARIAL = "- of which D judging the fake for G, forward (RGB + tone)"
G_UPDATE = "G backward + update: clip, Adam (generator_update)"
EMA = "EMA update (update_ema)"
D_STEP = "D step: real + fake, RGB + tone, backward, Adam (discriminator_step)"
D_TERMS = "- of which D terms, forward (discriminator_terms)"
WRAPPED = (
    (SIMULATION, "module", "with_artifacts"),
    (G_FORWARD, "module", "generator_forward"),
    (TONE, "objective", "tone_map"),
    (G_UPDATE, "module", "generator_update"),
    (D_STEP, "module", "discriminator_step"),
    (D_TERMS, "objective", "discriminator_terms"),
    (EMA, "module", "update_ema"),
)
INSIDE = (TONE, LPIPS_ROW, G_ADVERSARIAL, D_TERMS)


class StepTimer(L.Callback):
    """Times the parts of the real ``RefinerModule.training_step`` while a Trainer runs it.

    :meth:`install` replaces the module's and its objective's public step methods by timed
    wrappers on the instances (the step calls them through ``self``), and hooks the forwards
    of LPIPS and of D (inside the generator's forward only). ``steps`` holds one record per
    training step: seconds per row (summed when a part runs twice, as LPIPS in both spaces),
    ``whole`` (this batch's start to the next's) and ``r1`` (whether the D step computed R1).
    ``fetches``: seconds per batch drawn from the loader (:meth:`timed_batches`)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps: list[dict[str, float]] = []
        self.fetches: list[float] = []
        self._start: float | None = None
        self._inside: set[str] = set()  # the wrapped parts running now

    def _add(self, row: str, seconds: float) -> None:
        if self.steps:
            self.steps[-1][row] = self.steps[-1].get(row, 0.0) + seconds

    def _timed(self, row: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with stopwatch(self.device) as elapsed:
                self._inside.add(row)
                try:
                    out = fn(*args, **kwargs)
                finally:
                    self._inside.discard(row)
            self._add(row, elapsed.seconds)
            if row == D_TERMS and self.steps:
                self.steps[-1]["r1"] = float(out.r1 is not None)
            return out

        return timed

    def _time_forward(self, net: torch.nn.Module, row: str, only_in: str | None = None) -> None:
        """Time ``net``'s forward calls by hooks, all of them or those inside ``only_in``."""
        started: list[float] = []

        def before(*_) -> None:
            sync(self.device)
            started.append(time.perf_counter())

        def after(*_) -> None:
            sync(self.device)
            seconds = time.perf_counter() - started.pop()
            if only_in is None or only_in in self._inside:
                self._add(row, seconds)

        net.register_forward_pre_hook(before)
        net.register_forward_hook(after)

    def install(self, module: RefinerModule) -> None:
        """Wrap the step's parts on ``module`` (before ``Trainer.fit``)."""
        owners = {"module": module, "objective": module.objective}
        for row, owner, name in WRAPPED:
            setattr(owners[owner], name, self._timed(row, getattr(owners[owner], name)))
        if module.objective.lpips is not None:
            self._time_forward(module.objective.lpips, LPIPS_ROW)
        if module.discriminator is not None:  # D judging the fake for G's adversarial terms
            self._time_forward(module.discriminator, G_ADVERSARIAL, only_in=G_FORWARD)

    def timed_batches(self, loader: Iterable) -> Iterator:
        """The loader's batches, each draw timed (the Trainer draws them in the real loop)."""
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.fetches.append(time.perf_counter() - start)
            yield batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self.device)
        now = time.perf_counter()
        if self.steps and self._start is not None:
            self.steps[-1]["whole"] = now - self._start
        self._start = now
        self.steps.append({})


def run_real_step(
    module: RefinerModule, loader: Iterable, device: torch.device, steps: int
) -> StepTimer:
    """Train ``module`` for ``steps`` steps on ``loader`` under a :class:`StepTimer`: the
    real training step in a minimal Trainer (one device, no logger, checkpoints or
    validation)."""
    timer = StepTimer(device)
    timer.install(module)
    index = device.index if device.index is not None else 0
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on loaders and logging
        trainer = L.Trainer(
            default_root_dir=directory,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[index] if device.type == "cuda" else 1,
            precision=module.cfg.trainer.precision,
            max_steps=steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(module, train_dataloaders=timer.timed_batches(loader))
    return timer


def summarise(timer: StepTimer, r1_every: int) -> dict[str, float]:
    """Median seconds of each row over the steps after the first (a warm-up) without R1,
    R1's amortised cost, and ``whole``: the median whole step plus that share."""
    steps = timer.steps[1:]
    plain = [s for s in steps if not s.get("r1")]
    with_r1 = [s for s in steps if s.get("r1")]

    def median(rows: list[dict[str, float]], name: str) -> float:
        values = [s.get(name, 0.0) for s in rows if name != "whole" or "whole" in s]
        return statistics.median(values) if values else 0.0

    # In the order the step runs them: the EMA is updated at the batch's end.
    rows = [SIMULATION, G_FORWARD, TONE, LPIPS_ROW, G_ADVERSARIAL, G_UPDATE, D_STEP, D_TERMS, EMA]
    seconds = {DATA: statistics.median(timer.fetches[1:] or timer.fetches or [0.0])}
    seconds.update({name: median(plain, name) for name in rows})
    r1 = median(with_r1, D_STEP) - seconds[D_STEP] if with_r1 else 0.0
    seconds["r1"] = max(0.0, r1) / max(1, r1_every)
    seconds["whole"] = median(plain, "whole") + seconds["r1"]
    return seconds
