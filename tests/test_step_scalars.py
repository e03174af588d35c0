"""A logging step's scalars are read on the host once (training/step_scalars.py)."""

from __future__ import annotations

import pytest
import torch

from pixperfect.training.step_scalars import StepScalars, write_scalars
from pixperfect.training.syncs import count_syncs


def test_every_tensor_is_read_in_one_read_and_floats_pass_through():
    scalars = StepScalars()
    scalars.put("a", torch.tensor(1.5))
    scalars.put("b", torch.tensor(2, dtype=torch.long))
    scalars.put("counts", torch.tensor([3.0, 4.0]))
    scalars.put("lr", 0.001)
    with count_syncs("cpu") as counted:
        values = scalars.read()
    assert counted.total == 1 and counted.copies == 0
    assert values == {"a": 1.5, "b": 2.0, "counts": [3.0, 4.0], "lr": 0.001}
    assert len(scalars) == 0 and scalars.read() == {}


def test_a_name_put_twice_keeps_the_last_value():
    scalars = StepScalars()
    scalars.put("x", torch.tensor(1.0))
    scalars.put("x", 2.0)
    scalars.put("y", 1.0)
    scalars.put("y", torch.tensor(3.0))
    assert scalars.read() == {"x": 2.0, "y": 3.0}


def test_an_image_is_refused_with_its_name():
    with pytest.raises(ValueError, match="grid"):
        StepScalars().put("grid", torch.zeros(2, 2))


class _Logger:
    def __init__(self) -> None:
        self.calls: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append((metrics, step))


def test_every_logger_gets_the_scalars_at_the_step_and_nothing_is_written_empty():
    loggers = [_Logger(), _Logger()]
    write_scalars(loggers, {"a": 1.0}, step=7)
    write_scalars(loggers, {}, step=8)
    assert [logger.calls for logger in loggers] == [[({"a": 1.0}, 7)]] * 2
