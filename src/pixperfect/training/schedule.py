"""The generator's learning rate as a function of the step: a linear warm-up, then constant
or a cosine decay to ``lr * min_lr_ratio`` at ``trainer.max_steps``.

A pure function of ``global_step`` (set on the optimiser before each step) rather than a
stateful scheduler: a resumed run, or one whose ``trainer.max_steps`` was raised, gets the
learning rate of its step with nothing extra to checkpoint. A refiner whose ideal
correction is a few 8-bit levels may need the late, small steps; on the texture-only probe
the schedule alone did not stop the harm (docs/training.md, "Why the network learned
nothing on its prior").
"""

from __future__ import annotations

import math

from omegaconf import DictConfig


def learning_rate(optim: DictConfig, step: int, max_steps: int) -> float:
    """The generator's learning rate at generator step ``step`` (0-based)."""
    base = float(optim.lr)
    if optim.warmup_steps and step < optim.warmup_steps:
        return base * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return base
    span = max(max_steps - optim.warmup_steps, 1)
    progress = min(max(step - optim.warmup_steps, 0) / span, 1.0)
    floor = base * optim.min_lr_ratio
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
