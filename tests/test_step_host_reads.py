"""The paper step waits on the host only where it logs (docs/training.md, "What a run writes"):
on a step that logs nothing it reads no tensor value on the host and makes no tensor from host
data (each a blocking sync or host-to-device copy on a GPU), apart from the batch copy; a logging
step reads what it logs once.

Counted on a CPU with the proxy of :func:`pixperfect.training.syncs.count_syncs` (every
value read and every tensor made from host data; Adam's host-side step counters apart),
over the whole of each step the real trainer runs: from ``on_train_batch_start`` to the
next batch's fetch, so the callbacks (preemption, checkpoints, TensorBoard) and
Lightning's logging after the step are inside; the fetch and the batch's transfer are not.
The run: configs/paper.yaml shrunk for a CPU (64 px crops, a small FFC, a small
discriminator, bf16 autocast as in the paper), artifacts made in the step with the TAEF2
codec, every term the config allows without pretrained LPIPS weights (RGB and tone L1,
both adversarial terms, R1 on every other D step) from step 0, the EMA, the trainer of
``pixperfect train`` (:func:`pixperfect.training.train.build_trainer`).

The simulator's own reads (data_sim, being made device-side beside this work) are counted
apart and reported, not pinned here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from assets import TAESD_DIR, require
from conftest import ROOT
from omegaconf import OmegaConf

from pixperfect.config import load_config
from pixperfect.training.datamodule import build_datamodule
from pixperfect.training.guard import SkipLedger, masked_step, nonfinite_anywhere
from pixperfect.training.module import RefinerModule
from pixperfect.training.preemption import Preemption
from pixperfect.training.syncs import SyncCount, count_syncs
from pixperfect.training.train import build_trainer

STEPS = 8
LOG_EVERY = 4  # steps 3 and 7 (0-based) log
# A logging step reads what it logs once: every scalar of the step, the skip counts and the
# diagnostics concatenated into one tensor and read with one copy (training/step_scalars.py);
# the monitor's time/* are host arithmetic; one tensor made from host data (the artifact
# families' membership matrix the per-family gains are averaged with).
LOGGING_STEP_READS = 1
LOGGING_STEP_COPIES = 1


def paper_overrides(root: Path, taesd: Path) -> list[str]:
    return [
        f"run.root={root}",
        "run.name=host_reads",
        "data.source=skimage",
        "data.num_workers=0",
        "data.crop_size=64",
        "data.val_crop_size=64",
        "data.val_samples_per_image=1",
        "model.base_channels=8",
        "model.ffc_blocks=2",
        "model.depth=2",
        f"sim.texture.vae.path={taesd}",
        "loss.lpips_missing=skip",
        "loss.tone.warmup_steps=0",
        "gan.warmup_steps=0",
        "gan.base_channels=4",
        "gan.n_down=2",
        "gan.r1_every=2",
        f"trainer.max_steps={STEPS}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.strategy=auto",
        f"trainer.log_every_n_steps={LOG_EVERY}",
        "trainer.val_every_n_steps=1000",
        "trainer.ckpt_every_n_steps=1000",
        "trainer.image_every_n_steps=1000",
        "eval.max_size=64",
    ]


class StepWindows(L.Callback):
    """One :func:`count_syncs` block per step, from ``on_train_batch_start`` to the fetch of
    the batch after the next (the loader runs it: :meth:`batches`), and the simulation's
    share in a block of its own."""

    def __init__(self) -> None:
        self.steps: list[tuple[bool, SyncCount, SyncCount]] = []  # (logs, step, simulation)
        self._open = None
        self._simulation: list[SyncCount] = []

    def batches(self, loader: Iterable) -> Iterator:
        batches = iter(loader)
        while True:
            self._close()  # before the fetch: the loader's work is a loader worker's
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch

    def _close(self) -> None:
        if self._open is not None:
            block, counted, logs = self._open
            block.__exit__(None, None, None)
            simulation = self._simulation.pop() if self._simulation else SyncCount("none")
            self.steps.append((logs, counted, simulation))
            self._open = None

    def on_fit_start(self, trainer, module) -> None:
        simulate = module.with_artifacts

        def with_artifacts(batch):
            if self._open is None:
                return simulate(batch)
            with count_syncs("cpu") as counted:
                out = simulate(batch)
            self._simulation.append(counted)
            return out

        module.with_artifacts = with_artifacts

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        block = count_syncs("cpu")
        self._open = (block, block.__enter__(), module._logs_this_step())

    def on_train_end(self, trainer, module) -> None:
        self._close()
        module.__dict__.pop("with_artifacts", None)


def run_counted(root: Path) -> StepWindows:
    taesd = require(TAESD_DIR)
    cfg = load_config(ROOT / "configs" / "paper.yaml", paper_overrides(root, taesd))
    L.seed_everything(cfg.run.seed, verbose=False)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    assert module.simulator.cfg.texture.vae.kind == "taesd"
    windows = StepWindows()
    trainer = build_trainer(cfg, root / "run")
    trainer.callbacks.insert(0, windows)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.fit(module, train_dataloaders=windows.batches(datamodule.train_dataloader()))
    finally:
        torch.set_num_threads(threads)
    return windows


def describe(counted: SyncCount, simulation: SyncCount) -> str:
    return (
        f"{counted.total} reads ({dict(counted.by_op)}), {counted.copies} copies, "
        f"simulation {simulation.total} reads {simulation.copies} copies; "
        f"sites {dict(counted.sites)}"
    )


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> StepWindows:
    return run_counted(tmp_path_factory.mktemp("host_reads"))


def test_a_step_that_logs_nothing_reads_nothing_on_the_host(windows):
    # Step 0 builds Adam's state and the logger: the steady state is from step 1 on.
    quiet = [(c, s) for logs, c, s in windows.steps[1:] if not logs]
    assert len(quiet) >= 4
    for counted, simulation in quiet:
        reads = counted.total - simulation.total
        copies = counted.copies - simulation.copies
        assert (reads, copies) == (0, 0), describe(counted, simulation)


def test_a_logging_step_reads_what_it_logs_once(windows):
    logging = [(c, s) for logs, c, s in windows.steps[1:] if logs]
    assert logging
    for counted, simulation in logging:
        reads = counted.total - simulation.total
        copies = counted.copies - simulation.copies
        assert reads == LOGGING_STEP_READS, describe(counted, simulation)
        assert copies <= LOGGING_STEP_COPIES, describe(counted, simulation)


def test_the_simulators_own_reads_are_reported(windows, capsys):
    # Not pinned: data_sim's per-parameter copies are being removed beside this work.
    quiet = [s for logs, _, s in windows.steps[1:] if not logs]
    with capsys.disabled():
        print(
            f"\nsimulator per non-logging step: reads {[s.total for s in quiet]}, "
            f"tensors from host data {[s.copies for s in quiet]}"
        )


def _adam(fused: bool = False) -> tuple[torch.nn.Parameter, torch.optim.Adam]:
    weight = torch.nn.Parameter(torch.arange(4.0))
    return weight, torch.optim.Adam([weight], lr=0.1, fused=fused)


@pytest.mark.parametrize("fused", [False, True])
def test_a_masked_step_applies_nothing_where_skipped_and_everything_elsewhere(fused):
    weight, adam = _adam(fused)
    twin, plain = _adam(fused)
    for skip, grad in [(1.0, float("nan")), (0.0, 1.0), (1.0, float("inf")), (0.0, 2.0)]:
        before = (weight.detach().clone(), {k: v.clone() for k, v in adam.state[weight].items()})
        weight.grad = torch.full((4,), grad)
        masked_step(adam, torch.tensor(skip))
        if skip:  # nothing moved, the first step's new moments included
            assert torch.equal(weight, before[0])
            for key in ("exp_avg", "exp_avg_sq"):
                old = before[1].get(key, torch.zeros(4))
                assert torch.equal(adam.state[weight][key], old), key
        else:  # exactly the plain step (the fused kernel keeps its step count too)
            twin.grad = torch.full((4,), grad)
            plain.step()
            if fused:
                assert torch.equal(weight, twin)
    assert torch.isfinite(weight).all()
    if fused:
        assert float(adam.state[weight]["step"]) == 2


def test_the_guard_counts_skips_on_the_device_and_reports_them_when_read():
    ledger = SkipLedger()
    with count_syncs("cpu") as counted:
        ledger.add("generator", torch.tensor(1.0))
        ledger.add("discriminator", torch.tensor(0.0))
        ledger.add("generator", torch.tensor(1.0))
        flag = nonfinite_anywhere(torch.tensor([1.0, float("nan")]), _OneProcess())
    assert counted.total == 0 and float(flag) == 1.0
    assert ledger.report(7) == [
        "step 7: non-finite generator loss, step skipped (2 times since the last log)"
    ]
    assert ledger.report(8) == []


class _OneProcess:
    def reduce(self, tensor, reduce_op="sum"):
        return tensor


class _Trainer:
    def __init__(self, world_size: int, global_step: int) -> None:
        self.world_size, self.global_step = world_size, global_step


def test_preemption_is_polled_every_n_steps_across_ranks_and_every_step_alone(tmp_path):
    preemption = Preemption(tmp_path, poll_every=50)
    polled = [step for step in range(1, 201) if preemption.polls(_Trainer(2, step))]
    assert polled == [50, 100, 150, 200]  # the same global steps on every rank
    assert all(preemption.polls(_Trainer(1, step)) for step in range(1, 10))
