"""The benchmark harness: what every script in benchmarks/ uses to time, to print its tables
and to say where it ran. Scripts run as ``python benchmarks/<name>.py``, so this folder is on
``sys.path`` and they ``from harness import ...``.

- timing: :func:`time_it` (median of repeats after one warm-up, the device synchronised
  around each), :func:`sync`, :func:`stopwatch`, :func:`read_rate` (samples/s of a loader);
- tables: :class:`Columns` (fixed-width text) and :func:`markdown_table`;
- the machine line: :func:`machine_line` (CPU model and cores, GPU, torch, date), printed
  at the top of each benchmark's output, and :func:`use_command_allocator`.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from pixperfect.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]  # the checkout: benchmarks run from a clone

# --- timing ---------------------------------------------------------------------------------


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


class Elapsed:
    """Seconds measured by :func:`stopwatch`, set when its block ends."""

    seconds: float = 0.0


@contextmanager
def stopwatch(device: torch.device | None = None) -> Iterator[Elapsed]:
    """Time one block, once (no warm-up): ``with stopwatch() as t: ...; t.seconds``; with a
    CUDA ``device``, synchronised before and after."""
    elapsed = Elapsed()
    if device is not None:
        sync(device)
    start = time.perf_counter()
    yield elapsed
    if device is not None:
        sync(device)
    elapsed.seconds = time.perf_counter() - start


def read_rate(
    loader: Iterable, batches: int, batch_size: int, each: Callable | None = None
) -> float:
    """Samples/s of ``batches`` batches of ``loader`` after one untimed batch (worker start-up
    is not throughput); ``each`` is applied to every timed batch (a conversion the consumer
    would do)."""
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        if each is not None:
            each(batch)
    return batches * batch_size / (time.perf_counter() - start)


def repeat(loader: Iterable, times: int) -> Iterator:
    """``loader``'s batches, ``times`` over (a finite dataset read past its end)."""
    for _ in range(times):
        yield from loader


# --- tables ---------------------------------------------------------------------------------


class Columns:
    """A fixed-width text table. Each column is (title, format spec), e.g. ("size", ">6") or
    ("images/s", ">10.1f"); the title takes the spec's alignment and width, a row's values
    the whole spec. ``gap`` goes between columns."""

    def __init__(self, *columns: tuple[str, str], gap: str = "") -> None:
        self.columns, self.gap = columns, gap

    def header(self) -> str:
        cells = []
        for title, spec in self.columns:
            align, width = re.match(r"([<>^]?)(\d*)", spec).groups()
            cells.append(f"{title:{align or '<'}{width}}")
        return self.gap.join(cells)

    def row(self, *values: object) -> str:
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        return self.gap.join(
            format(v, spec) for v, (_, spec) in zip(values, self.columns, strict=True)
        )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` (default) or ``r``."""
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = [markdown_row(header), "|" + "|".join(rules) + "|"]
    lines += [markdown_row(row) for row in rows]
    return "\n".join(lines)


def markdown_row(cells: Sequence[object]) -> str:
    """One row of a markdown table (to print rows as they are measured)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


# --- the machine line -----------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """Where a benchmark ran: CPU model and cores, torch's threads, the GPUs, torch's
    version and today's date (UTC)."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        gpu = f"{n} x {torch.cuda.get_device_name(0)}"
    else:
        gpu = "no GPU"
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch "
        f"threads) | {gpu} | torch {torch.__version__} | {today}"
    )


def use_command_allocator() -> str:
    """Apply the ``pixperfect`` command's allocator setting (pixperfect.allocator), so a
    benchmark measures what users get; returns a label for the table's header."""
    return "glibc keeps freed memory" if keep_freed_memory() else "default"
