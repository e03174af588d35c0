"""Running a build: this array task's units of work, in this process or ``--workers``
processes, keeping complete shards, ending with the manifest once every shard is complete.

A *job* (:class:`pixperfect.shards.photos.PhotoJob`, or a corpus build's job) has a
``spec`` (the recipe: ``validate``, ``recipe``, ``recipe_hash``, ``num_shards``, ``kind``,
``device``), ``names()`` (every output shard), ``units(task_index, num_tasks)`` (this task's
units of work), ``outputs(unit)`` (the shards a unit writes), ``build_unit(unit, out,
todo)`` (writes the ``todo`` shards of a unit, returns their sidecars), ``samples_of(names)``
and ``bytes_if_unknown`` (for the disk-full message) and ``header()`` (the manifest's
recipe part). Whichever task finds every shard complete writes ``manifest.json``.

Array tasks: ``--task-index``/``--num-tasks``, by default from SLURM: with neither given,
task ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``; with
``--num-tasks T`` given, task ``SLURM_ARRAY_TASK_ID`` of ``T``, so resubmitting only failed
indices (``sbatch --array=3,7 ... --num-tasks 16``) rebuilds exactly those tasks' shards.

Worker processes get the job once (the pool's initializer), then unit numbers: the photo
list is pickled once per worker, not once per shard.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from pixperfect.atomic import FULL
from pixperfect.errors import InputError, WorkFailed
from pixperfect.shards.recipe import check_plan, resolve_device
from pixperfect.shards.writing import (
    DiskFullError,
    atomic_write,
    disk_full_message,
    is_complete,
    remove_leftovers,
    write_manifest_if_complete,
)

log = logging.getLogger(__name__)

_JOB = None  # the job of a worker process


class Job:
    """What photo and corpus jobs share: the disk-full estimate before any shard exists and
    the manifest's recipe part (:meth:`header`, which a job extends with its source)."""

    def __init__(self, spec) -> None:
        self.spec = spec

    @property
    def bytes_if_unknown(self) -> float:  # uncompressed 8-bit planes of a sample
        return self.spec.size**2 * (3 if self.spec.kind == "clean" else 8) + 4096

    def header(self) -> dict:
        spec = self.spec
        return {
            "kind": spec.kind,
            "recipe": spec.recipe(),
            "recipe_hash": spec.recipe_hash(),
            "seed": spec.seed,
            "size": spec.size,
        }


class UnitFailed(Exception):
    """A unit of work that could not be done and wrote nothing (an input shard that cannot
    be read): the task goes on with its other units and ends with :class:`BuildIncomplete`."""


class BuildIncomplete(WorkFailed, RuntimeError):
    """Some units failed (:class:`UnitFailed`); the message names them and says that a rerun
    retries them. ``summary`` is the build's summary otherwise."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def _worker_init(job=None) -> None:
    # Worker processes split the cores between them instead of each taking all of them.
    global _JOB
    torch.set_num_threads(1)
    _JOB = job


def _build_in_worker(unit, out: Path, todo: list[str]) -> list[dict] | str:
    return _attempt(_JOB, unit, out, todo)


def _attempt(job, unit, out: Path, todo: list[str]) -> list[dict] | str:
    """The unit's sidecars, or why it failed (:class:`UnitFailed`)."""
    try:
        return job.build_unit(unit, out, todo)
    except UnitFailed as e:
        return str(e)


def task_from_env(task_index: int | None, num_tasks: int | None) -> tuple[int, int]:
    """(task index, number of tasks) from the arguments, else SLURM's array variables (see
    the module docstring); an index outside ``0..T-1`` is refused."""
    if task_index is None:
        first = 0 if num_tasks is not None else int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        task_index = int(os.environ.get("SLURM_ARRAY_TASK_ID", first)) - first
    if num_tasks is None:
        num_tasks = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
    if not 0 <= task_index < num_tasks:
        raise InputError(f"--task-index {task_index} is outside 0..{num_tasks - 1} (--num-tasks)")
    return task_index, num_tasks


def run(
    job,
    out: str | Path,
    workers: int = 1,
    task_index: int | None = None,
    num_tasks: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Build this task's missing shards; returns a summary: built, kept, samples (built now),
    manifest (path or None), num_shards, device (the kind that simulated; cpu for clean
    shards) and seconds (wall time of building, for samples/s).

    ``device`` (auto, cpu or cuda) overrides ``job.spec.device``; either is resolved here.
    Raises :class:`DiskFullError` when the folder runs out of space (or quota), in this
    process or a worker's, after the workers stopped and their ``.partial`` files are gone:
    complete shards are kept, and the same call after freeing space resumes."""
    job.spec = replace(job.spec, device=resolve_device(device or job.spec.device))
    job.spec.validate()
    out = Path(out)
    task_index, num_tasks = task_from_env(task_index, num_tasks)
    units = job.units(task_index, num_tasks)
    mine = [n for u in units for n in job.outputs(u)]
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _run(job, out, workers, task_index, num_tasks, units, mine, progress)
    except OSError as e:
        if e.errno not in FULL:
            raise
        remove_leftovers(out, (n for n in mine if not is_complete(out, n)))
        message = disk_full_message(
            out, job.names(), mine, num_tasks, e, job.samples_of, job.bytes_if_unknown
        )
        raise DiskFullError(message) from e


def _run(job, out: Path, workers, task_index, num_tasks, units, mine, progress) -> dict:
    spec = job.spec
    sim_device = spec.device if spec.kind == "artifact" else "cpu"
    check_plan(spec, out, atomic_write)
    todo = {u: [n for n in job.outputs(u) if not is_complete(out, n)] for u in units}
    todo = {u: names for u, names in todo.items() if names}
    remove_leftovers(out, (n for names in todo.values() for n in names))  # of a killed run
    task = f" {task_index + 1}/{num_tasks}" if num_tasks > 1 else ""
    bar = tqdm(
        total=sum(len(v) for v in todo.values()),
        unit="shard",
        desc=f"shards{task} on {sim_device}",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 10,
        dynamic_ncols=True,
    )
    records: list[dict] = []
    failed: list[str] = []

    def done(result: list[dict] | str, names: list[str]) -> None:
        if isinstance(result, str):
            failed.append(result)
        else:
            records.extend(result)
        bar.update(len(names))

    start = time.perf_counter()
    with bar:
        if workers <= 1 or len(todo) <= 1:
            for unit, names in todo.items():
                done(_attempt(job, unit, out, names), names)
        else:
            ctx = get_context("spawn")  # no forked torch thread pools
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_worker_init, initargs=(job,)
            ) as pool:
                futures = {pool.submit(_build_in_worker, u, out, n): n for u, n in todo.items()}
                try:
                    for future in as_completed(futures):
                        done(future.result(), futures[future])
                except BaseException:
                    # Queued units are dropped; running ones end (on a full disk, at their
                    # next write) and remove their .partial files before the pool is gone.
                    pool.shutdown(cancel_futures=True)
                    raise
    seconds = time.perf_counter() - start
    skipped = sum(sum(r["skipped"].values()) for r in records)
    if skipped:
        lines = [f"{r['name']}: {line}" for r in records for line in r["examples"]]
        log.warning("skipped %d image(s), e.g.:\n  %s", skipped, "\n  ".join(lines[:20]))
    manifest = write_manifest_if_complete(out, job.names(), job.header())
    summary = {
        "built": len(records),
        "kept": len(mine) - sum(len(v) for v in todo.values()),
        "samples": sum(r["samples"] for r in records),
        "manifest": manifest,
        "num_shards": spec.num_shards,
        "device": sim_device,
        "seconds": seconds,
    }
    if failed:
        shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise BuildIncomplete(
            f"{out}: {len(failed)} unit(s) of work failed and wrote nothing ({shown}); the "
            f"other {len(records)} shard(s) are complete: rerun the same command to retry",
            summary,
        )
    return summary
