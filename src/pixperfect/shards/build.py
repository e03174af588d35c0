"""``pixperfect shards build`` from photos: the entry point, and the names callers import.

The build is split along its seams:

- :mod:`.recipe`: what the bytes depend on (:class:`BuildSpec`), ``plan.json``, devices;
- :mod:`.photos`: which crops each shard of a photo build holds, and writing one shard;
- :mod:`.samples`: crops to simulated, encoded tar records (shared with corpus builds);
- :mod:`.writing`: crash safety (``.partial`` + rename, sidecars, manifest, full disks);
- :mod:`.tasks`: array tasks, worker processes, resume, the manifest at the end.

A build from an image corpus (``--images PATTERN`` of tar shards) is
:func:`pixperfect.corpus.build.build_corpus`, on the same pieces.

Devices (``--device auto|cpu|cuda``; ``auto`` is cuda when ``torch.cuda.is_available()``):
the parameters are always drawn on the CPU (per sample, seeded by its photo and crop
index); each batch of ``SIM_BATCH`` crops is simulated on the device, latent-codec round
trip included, and comes back to the CPU for encoding (with ``--workers W`` each worker
process does so on the same device). :func:`build` returns the device and the seconds it
took, for benchmarks. The simulation's random noise is drawn on the images' device, so CPU
and CUDA give different pixels: the device kind is part of an artifact shard's recipe
(``device``) and a folder is never resumed on the other kind (clean shards simulate nothing
and do not record it; plans written before the option existed count as cpu). On CUDA each
shard is built with ``torch.use_deterministic_algorithms(True)`` (the previous setting is
restored afterwards, so a library caller keeps its own) and cuDNN's autotuner off, after
``CUBLAS_WORKSPACE_CONFIG`` defaults to ``:4096:8`` (cuBLAS's deterministic workspace; the
variable is read when cuBLAS starts, so a caller that ran CUDA work before should set it at
start-up). That is meant to make a rerun on the same device kind, software and GPU model
byte-identical (not yet checked on a GPU); shards from another GPU model or library version
may differ, as may those of a caller that changed TF32 settings. ``--device cpu`` gives the
same bytes as before the option existed.
"""

from __future__ import annotations

from pathlib import Path

from pixperfect.shards.photos import PhotoJob, build_photo_shard, load_source
from pixperfect.shards.recipe import (
    DEVICES,
    MANIFEST,
    PLAN,
    SIM_BATCH,
    SMALL_IMAGES,
    BuildSpec,
    check_plan,
    deterministic,
    resolve_device,
    shard_name,
    sim_from_dict,
)
from pixperfect.shards.tasks import run
from pixperfect.shards.writing import DiskFullError, atomic_write, is_complete

__all__ = [
    "DEVICES",
    "MANIFEST",
    "PLAN",
    "SIM_BATCH",
    "SMALL_IMAGES",
    "BuildSpec",
    "DiskFullError",
    "build",
    "build_photo_shard",
    "deterministic",
    "load_source",
    "resolve_device",
    "shard_is_complete",
    "shard_name",
    "sim_from_dict",
]


def shard_is_complete(out: Path, index: int) -> bool:
    return is_complete(Path(out), shard_name(index))


def _check_plan(spec: BuildSpec, out: Path) -> None:
    """Refuse to mix recipes in one folder; record the recipe on first use."""
    check_plan(spec, Path(out), atomic_write)


def build(
    spec: BuildSpec,
    out: str | Path,
    workers: int = 1,
    task_index: int | None = None,
    num_tasks: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Build this task's missing shards of a photo build (:func:`pixperfect.shards.tasks.run`
    says what is returned and raised); ``device`` overrides ``spec.device``."""
    return run(PhotoJob(spec), out, workers, task_index, num_tasks, progress, device)
