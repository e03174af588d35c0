"""benchmarks/bench_train.py times the real training step: a Trainer runs
``RefinerModule.training_step`` and the rows are the module's and the objective's own public
parts, so a change of either shows up in the table (nothing in the benchmark re-implements
the step)."""

from __future__ import annotations

import sys
import time

import torch
from conftest import ROOT

from pixperfect.training.module import RefinerModule
from pixperfect.training.objective import Objective

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train  # noqa: E402

FULL = [  # every term but LPIPS (no weights here), small D, warm-ups off
    "loss.l1=64",
    "loss.adversarial=1",
    "loss.tone_l1=64",
    "loss.tone_adversarial=1",
    "loss.tone.warmup_steps=0",
    "loss.tone.samples_per_region=256",
    "gan.base_channels=4",
    "gan.n_down=2",
    "gan.warmup_steps=0",
    "gan.r1_every=4",
]
DELAY = 0.2  # seconds added to one part of the objective on each side


def _slowed(monkeypatch, cls, name: str, calls: list[str]) -> None:
    real = getattr(cls, name)

    def slow(self, *args, **kwargs):
        calls.append(name)
        time.sleep(DELAY)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, slow)


def test_the_benchmark_times_the_modules_own_step_and_sees_a_change_of_the_objective(
    tiny_config, monkeypatch, capsys
):
    calls: list[str] = []
    _slowed(monkeypatch, Objective, "tone_map", calls)
    _slowed(monkeypatch, Objective, "discriminator_terms", calls)
    real_d_step = RefinerModule.discriminator_step

    def counted_d_step(self, *args, **kwargs):
        calls.append("discriminator_step")
        return real_d_step(self, *args, **kwargs)

    monkeypatch.setattr(RefinerModule, "discriminator_step", counted_d_step)
    seconds, module = bench_train.time_step(tiny_config(*FULL), torch.device("cpu"), repeats=1)

    steps = 3  # a warm-up, then one step with R1 and one without
    assert module.global_step == steps  # the Trainer stepped the module's own optimiser
    assert calls.count("tone_map") == calls.count("discriminator_step") == steps
    assert calls.count("discriminator_terms") == steps
    # The slowed parts of the objective show up in the rows of the step that call them.
    assert seconds[bench_train.TONE] >= DELAY
    assert seconds[bench_train.G_FORWARD] >= seconds[bench_train.TONE]
    assert seconds[bench_train.D_TERMS] >= DELAY
    assert seconds[bench_train.D_STEP] >= seconds[bench_train.D_TERMS]
    assert seconds["whole"] >= seconds[bench_train.G_FORWARD] + seconds[bench_train.D_STEP]
    assert seconds[bench_train.G_UPDATE] > 0 and seconds[bench_train.SIMULATION] > 0
    assert seconds["r1"] >= 0

    whole = bench_train.print_step_table(seconds, "R1 (amortised)")
    table = capsys.readouterr().out
    assert whole == seconds["whole"]
    for row in (*(r for r, _, _ in bench_train.WRAPPED), bench_train.DATA, "R1 (amortised)"):
        assert f"| {row} |" in table
    assert "| **whole step**" in table and "| sum of the parts |" in table
