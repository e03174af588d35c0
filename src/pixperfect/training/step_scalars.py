"""What a training step logs, read on the host once.

Lightning's ``self.log`` keeps each logged tensor where it is and, on a logging step, reads
every one of them with ``item()``: on a GPU that is one blocking device-to-host copy per
scalar (about sixty for the paper step), and a Python float given to it is first copied to
the device. :class:`StepScalars` collects a logging step's values instead (tensors on the
device, floats from the host), and :meth:`StepScalars.read` concatenates the tensors of each
device into one and reads it with one copy. :func:`write_scalars` hands the floats to the
run's loggers at the step Lightning would use for them.

The step's values go to TensorBoard only on the steps that log; nothing is collected on the
others (the module asks ``logs`` first and computes nothing a log alone needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


class StepScalars:
    """Values to log for the current step: 0-dim tensors, 1-dim tensors (read as lists of
    floats, for callers that need several numbers from one read) and floats."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}
        self._floats: dict[str, float] = {}

    def put(self, name: str, value: torch.Tensor | float) -> None:
        if isinstance(value, torch.Tensor):
            if value.dim() > 1:
                shape = tuple(value.shape)
                raise ValueError(f"{name}: a logged value is a scalar or a vector, not {shape}")
            self._floats.pop(name, None)
            self._tensors[name] = value.detach()
        else:
            self._tensors.pop(name, None)
            self._floats[name] = float(value)

    def put_all(self, values: Mapping[str, torch.Tensor | float]) -> None:
        for name, value in values.items():
            self.put(name, value)

    def __len__(self) -> int:
        return len(self._tensors) + len(self._floats)

    def read(self) -> dict[str, float | list[float]]:
        """Every value as floats (vectors as lists), and the collection emptied: one read of
        one concatenated tensor per device the values live on."""
        out: dict[str, float | list[float]] = dict(self._floats)
        by_device: dict[torch.device, list[str]] = {}
        for name, tensor in self._tensors.items():
            by_device.setdefault(tensor.device, []).append(name)
        for names in by_device.values():
            parts = [self._tensors[name] for name in names]
            flat = torch.cat([t.float().reshape(-1) for t in parts]).tolist()  # the one read
            offset = 0
            for name, tensor in zip(names, parts, strict=True):
                n = tensor.numel()
                out[name] = flat[offset] if tensor.dim() == 0 else flat[offset : offset + n]
                offset += n
        self._tensors, self._floats = {}, {}
        return out


def write_scalars(loggers: Iterable, scalars: Mapping[str, float], step: int) -> None:
    """Log ``scalars`` (floats) to each of ``loggers`` at ``step``; each logger writes on
    rank 0 only (Lightning's loggers are rank-zero-only)."""
    if not scalars:
        return
    for logger in loggers:
        logger.log_metrics(dict(scalars), step=step)
