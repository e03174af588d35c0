"""Step timing over every rank and every step of a log window: what ``time/*`` shows.

This module owns the throughput scalars of a training run. Each rank marks five points of
every batch (:class:`RankMonitor`): the end of the previous batch, the batch's start
(``on_train_batch_start``, before DDP's forward), the training step's entry, the end of the
simulation, the end of the generator's forward and loss (``presync``: the last point before
the step's first cross-rank collective) and the batch's end. The marks are host clocks on
the CPU and CUDA events on a GPU (recorded on the stream, never waited for), so a step that
logs nothing reads nothing back from the device. On a logging step every rank turns its
window into a small ``(steps, fields)`` array on the host (the events are read there,
once), one ``all_gather`` brings every rank's window to every rank, and
:func:`window_statistics` reduces it over ranks and steps with numpy.

The scalars (docs/training.md, "TensorBoard"), each over every rank and every step since
the last log:

- ``time/step_s_{mean,max,p95}``: the batch, start to end (collective waits included: in
  synchronous DDP every rank waits out the slowest, so this is about equal across ranks);
- ``time/data_s_{mean,max,p95}``: the wait for the batch, from the previous batch's end;
- ``time/data_wait_share_{mean,max,p95}``: data_s / (data_s + step_s), per rank and step;
- ``time/simulation_s_{mean,max,p95}``: the on-device artifact simulation;
- ``time/presync_s_{mean,max,p95}``: the step's work before its first collective
  (simulation, G's forward and loss): nobody waits inside it, so a slow rank shows here;
- ``time/slowest_rank``: the rank the others wait for, the one with the longest mean
  data_s + presync_s (its arrival at the step's first collective), and
  ``time/slowest_rank_lag_s``: how much later it arrives than the median rank, per step;
- ``time/images_per_s`` (per device: images over data_s + step_s, mean over ranks),
  ``time/images_per_s_total`` (the sum over ranks) and ``time/mfu`` (model FLOP
  utilisation: images/s per device x FLOPs per image from ``training/cost.py`` over the
  device's peak, :func:`peak_flops`; logged only where a peak is known or given).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

# The marks of one batch, in order. ``previous_end`` is the previous batch's ``end``.
MARKS = ("previous_end", "batch_start", "step_start", "simulated", "presync", "end")
# The fields of a window row: seconds between two marks, and the batch's images.
FIELDS = ("step_s", "data_s", "simulation_s", "presync_s", "images")
_SPANS = {
    "step_s": ("batch_start", "end"),
    "data_s": ("previous_end", "batch_start"),
    "simulation_s": ("step_start", "simulated"),
    "presync_s": ("step_start", "presync"),
}
STATISTICS = ("mean", "max", "p95")
TIMED = ("step_s", "data_s", "data_wait_share", "simulation_s", "presync_s")

# Dense bfloat16/float16 tensor-core peaks in TFLOP/s from the vendors' data sheets (not
# measured here), matched in this order against torch.cuda.get_device_name(). MFU against
# them is logged for 16-bit precisions only; any other precision or device needs
# trainer.peak_tflops.
PEAK_TFLOPS_16BIT = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)
SIXTEEN_BIT = ("bf16-mixed", "bf16-true", "16-mixed", "16-true", "bf16", "16")


def peak_flops(device: torch.device, precision: str, given_tflops: float | None) -> float | None:
    """The device's peak FLOP/s for MFU: ``trainer.peak_tflops`` when given, else the data
    sheet's dense 16-bit peak of a known CUDA device under a 16-bit precision, else None."""
    if given_tflops is not None:
        return given_tflops * 1e12
    if device.type != "cuda" or str(precision) not in SIXTEEN_BIT:
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS_16BIT:
        if key in name:
            return tflops * 1e12
    return None


def _stats(name: str, values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    return {
        f"time/{name}_mean": float(finite.mean()),
        f"time/{name}_max": float(finite.max()),
        f"time/{name}_p95": float(np.quantile(finite, 0.95)),
    }


def window_statistics(
    gathered: np.ndarray, flops_per_image: float | None = None, peak: float | None = None
) -> dict[str, float]:
    """The ``time/*`` scalars of one log window from ``gathered``: (ranks, steps, FIELDS),
    NaN where a rank has no value (padding, the first data wait after a start or a
    validation). Mean, max and p95 are over every (rank, step); see the module docstring.
    Host arithmetic (numpy): nothing here touches a device."""
    gathered = np.asarray(gathered, dtype=np.float64)
    column = {name: gathered[..., i] for i, name in enumerate(FIELDS)}
    step, data = column["step_s"], column["data_s"]
    rows = np.isfinite(step)  # (ranks, steps): the steps a rank ran in this window
    scalars: dict[str, float] = {}
    for name in ("step_s", "data_s", "simulation_s", "presync_s"):
        scalars.update(_stats(name, column[name][rows]))
    with np.errstate(invalid="ignore", divide="ignore"):
        scalars.update(_stats("data_wait_share", (data / (data + step))[rows]))
    if not rows.any():
        return scalars
    # The rank the others wait for: the latest to reach the step's first collective.
    arrival = np.where(rows, np.nan_to_num(data) + np.nan_to_num(column["presync_s"]), 0)
    per_rank = arrival.sum(1) / np.maximum(rows.sum(1), 1)
    scalars["time/slowest_rank"] = float(per_rank.argmax())
    lower_median = np.sort(per_rank)[(per_rank.size - 1) // 2]  # a rank's own value
    scalars["time/slowest_rank_lag_s"] = float(per_rank.max() - lower_median)
    # Images per second of wall time per device, over the window.
    wall = np.where(rows, step + np.nan_to_num(data), 0).sum(1)
    images = np.where(rows, column["images"], 0).sum(1)
    rates = images / np.maximum(wall, 1e-12)
    scalars["time/images_per_s"] = float(rates.mean())
    scalars["time/images_per_s_total"] = float(rates.sum())
    if flops_per_image is not None and peak:
        scalars["time/mfu"] = float(rates.mean()) * flops_per_image / peak
    return scalars


class _HostClock:
    """Seconds on the host's monotonic clock (the CPU: the work is done when the call
    returns)."""

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, start: float, end: float) -> float:
        return end - start


class _EventClock:
    """CUDA events recorded on the current stream: recording does not wait for the device;
    the times are read (after the last event completes) at logging steps only."""

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


@dataclass
class _Batch:
    marks: dict[str, object] = field(default_factory=dict)
    images: int = 0


class RankMonitor:
    """One rank's marks for the batches of the current log window (``capacity`` batches at
    most: ``trainer.log_every_n_steps``), and their reduction over every rank at a logging
    step (:meth:`reduce`, a collective: call it on every rank at the same step)."""

    def __init__(self, device: torch.device, capacity: int) -> None:
        self.device = device
        self.capacity = max(1, capacity)
        self.clock = _EventClock() if device.type == "cuda" else _HostClock()
        self._previous_end: object | None = None
        self._current: _Batch | None = None
        self._window: list[_Batch] = []
        self.last_gathered: np.ndarray | None = None  # (ranks, steps, FIELDS), for tests

    def mark(self, name: str) -> None:
        """Mark ``name`` (one of :data:`MARKS` after ``previous_end``) of the current batch;
        ``batch_start`` opens a batch."""
        if name == "batch_start":
            self._current = _Batch({"previous_end": self._previous_end})
        if self._current is not None:
            self._current.marks[name] = self.clock.mark()

    def end_batch(self, images: int) -> None:
        """Close the current batch (``images`` in it) into the window."""
        end = self.clock.mark()
        if self._current is not None:
            self._current.marks["end"] = end
            self._current.images = images
            self._window.append(self._current)
            self._window = self._window[-self.capacity :]
        self._current = None
        self._previous_end = end

    def restart_data_clock(self) -> None:
        """After a pause that is not a wait for data (validation): the next batch's data
        wait is counted from now."""
        if self._previous_end is not None:
            self._previous_end = self.clock.mark()

    def _seconds(self, batch: _Batch, span: tuple[str, str]) -> float:
        start, end = (batch.marks.get(name) for name in span)
        if start is None or end is None:
            return math.nan
        return self.clock.seconds(start, end)

    def window(self) -> np.ndarray:
        """This rank's window as a (capacity, FIELDS) float64 array on the host, NaN-padded;
        the window is emptied. On CUDA this reads the events: logging steps only."""
        rows = np.full((self.capacity, len(FIELDS)), math.nan)
        for i, batch in enumerate(self._window):
            values = [self._seconds(batch, _SPANS[name]) for name in FIELDS[:-1]]
            rows[i] = [*values, float(batch.images)]
        self._window = []
        return rows

    def gather(self) -> np.ndarray:
        """Every rank's :meth:`window`, (ranks, capacity, FIELDS) on the host: one
        ``all_gather`` of a small tensor (one copy to the device and one back on CUDA)."""
        local = self.window()
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local[None]
        on_device = torch.from_numpy(local).to(self.device)
        parts = [torch.empty_like(on_device) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, on_device)
        return np.asarray(torch.stack(parts).tolist())  # the one read

    def reduce(
        self, flops_per_image: float | None = None, peak: float | None = None
    ) -> dict[str, float]:
        """The window's ``time/*`` scalars over every rank (:func:`window_statistics`);
        the same on every rank. A collective."""
        self.last_gathered = self.gather()
        return window_statistics(self.last_gathered, flops_per_image, peak)
