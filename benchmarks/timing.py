"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``,
so this folder is on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from pixperfect.allocator import keep_freed_memory


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up run (kernel
    selection, codec loading)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def use_command_allocator() -> str:
    """Apply the ``pixperfect`` command's allocator setting (pixperfect.allocator), so a
    benchmark measures what users get; returns a label for the table's header."""
    return "glibc keeps freed memory" if keep_freed_memory() else "default"
