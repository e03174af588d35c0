"""``pixperfect shards build``: precompute webdataset shards from a photo folder.

The plan is a pure function of the recipe: photos in a seeded order, ``crops_per_image``
crops each, ``shard_size`` samples per shard; every crop and every simulation draw is seeded
by its photo and crop index. So any shard can be (re)built alone, by any process or SLURM
array task, and always comes out byte-identical. That gives:

- resume: a shard is complete when its sidecar ``shard-NNNNNN.json`` exists and the tar has
  the recorded size; everything else is rebuilt;
- crash safety: a shard is written as ``shard-NNNNNN.tar.partial``, fsynced and renamed
  when closed, so a killed build never leaves a truncated file under the shard name
  (webdataset's ``ShardWriter`` writes straight to the final name, hence ``TarWriter`` per
  shard here); then its sidecar, the completeness marker, and at the end the manifest, each
  to a ``.partial`` name, fsynced and renamed. A failed write removes its ``.partial`` file
  (and a shard whose sidecar could not be written loses its tar too); a rerun removes those a
  killed build left;
- a full disk (ENOSPC, or EDQUOT) stops the build with :class:`DiskFullError`, which names
  the folder, the space the shards still to build need (estimated from the shards written so
  far, else from the one being written) and the space free; rerunning the same command
  after freeing space resumes it, to the same bytes;
- SLURM arrays: task ``i`` of ``T`` builds shards ``i, i + T, ...``; whichever task finds
  every shard complete writes ``manifest.json``.

Devices (``--device auto|cpu|cuda``; ``auto`` is cuda when ``torch.cuda.is_available()``):
the parameters are always drawn on the CPU (per sample, seeded as above); each batch of
``SIM_BATCH`` crops is simulated on the device, latent-codec round trip included, and comes
back to the CPU for encoding (with ``--workers W`` each worker process does so on the same
device). :func:`build` returns the device and the seconds it took, for benchmarks. The
simulation's random noise is drawn on the images' device, so CPU and CUDA give different
pixels: the device kind is part of an artifact shard's recipe (``device``) and a folder is
never resumed on the other kind (clean shards simulate nothing and do not record it; plans
written before the option existed count as cpu). On CUDA each shard is built with
``torch.use_deterministic_algorithms(True)`` (the previous setting is restored afterwards,
so a library caller keeps its own) and cuDNN's autotuner off, after
``CUBLAS_WORKSPACE_CONFIG`` defaults to ``:4096:8`` (cuBLAS's deterministic workspace; the
variable is read when cuBLAS starts, so a caller that ran CUDA work before should set it at
start-up). That is meant to make a rerun on the same device kind, software and GPU model
byte-identical (not yet checked on a GPU); shards from another GPU model or library version
may differ, as may those of a caller that changed TF32 settings. ``--device cpu`` gives the
same bytes as before the option existed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import torch
import webdataset as wds
from tqdm import tqdm

from data_sim import SIM_VERSION
from data_sim.sampling import derive_seed
from data_sim.simulator import ArtifactSimulator, SimConfig
from pixperfect import __version__
from pixperfect.atomic import FULL, atomic_file, fsync_dir
from pixperfect.data.crops import random_crop_with_origin
from pixperfect.shards.format import FORMATS, KINDS, encode_sample

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PLAN = "plan.json"
SMALL_IMAGES = ("upscale", "skip")
SIM_BATCH = 16  # samples simulated together; part of the recipe (noise draws depend on it)
DEVICES = ("auto", "cpu", "cuda")


class DiskFullError(OSError):
    """The output folder ran out of space (or quota) while building; the message names the
    folder, the space still needed and the space free, and says that a rerun resumes."""


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


@dataclass
class BuildSpec:
    """Everything a shard's bytes depend on (the recipe), plus the sources' list."""

    sources: list[str]  # file paths, or "skimage:<name>" for scikit-image's photos
    kind: str = "artifact"
    size: int = 128
    crops_per_image: int = 8
    shard_size: int = 256
    seed: int = 0
    image_format: str = "png"
    small_images: str = "upscale"
    sim: dict = field(default_factory=dict)  # SimConfig as a plain dict (artifact shards)
    device: str = "cpu"  # the kind that simulates, cpu or cuda (resolve_device turns auto)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.image_format not in FORMATS:
            raise ValueError(f"--format {self.image_format!r}: choose one of {', '.join(FORMATS)}")
        if self.small_images not in SMALL_IMAGES:
            raise ValueError(
                f"data.small_images={self.small_images!r}: choose one of {', '.join(SMALL_IMAGES)}"
            )
        for name in ("size", "crops_per_image", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if not self.sources:
            raise ValueError("no source images")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(
                f"device {self.device!r}: a device kind, cpu or cuda (resolve_device turns "
                "--device auto into one)"
            )

    def recipe(self) -> dict:
        recipe = {**asdict(self), "sim_batch": SIM_BATCH, "format_version": 1}
        if self.kind == "artifact":  # clean crops do not depend on the simulator
            recipe["sim_version"] = SIM_VERSION
        else:  # nor on the device: there is nothing to simulate
            del recipe["device"]
        return recipe

    def recipe_hash(self) -> str:
        text = json.dumps(self.recipe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def samples(self) -> list[tuple[int, int]]:
        """(source index, crop index) of every planned sample, in shard order: photos in a
        seeded order (a shard is not one folder's subject), a photo's crops together (each
        photo is decoded once per shard)."""
        order = torch.randperm(
            len(self.sources), generator=torch.Generator().manual_seed(self.seed)
        )
        return [(int(i), c) for i in order for c in range(self.crops_per_image)]

    @property
    def num_shards(self) -> int:
        return math.ceil(len(self.sources) * self.crops_per_image / self.shard_size)

    def shard_samples(self, index: int) -> list[tuple[int, int]]:
        return self.samples()[index * self.shard_size : (index + 1) * self.shard_size]


def resolve_device(device: str) -> str:
    """``--device`` to the device kind that simulates: ``auto`` is cuda when CUDA is available,
    else cpu; ``cuda`` without CUDA and unknown names are refused (ValueError)."""
    if device not in DEVICES:
        raise ValueError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda: CUDA is not available here (torch.cuda.is_available() is False); "
            "use --device cpu (or auto), or run on a machine with a GPU"
        )
    return device


@contextmanager
def deterministic(device: str) -> Iterator[None]:
    """On cuda: deterministic algorithms and no cuDNN autotuning inside, the caller's settings
    restored on exit; ``CUBLAS_WORKSPACE_CONFIG`` defaults to ``:4096:8`` (and stays set).
    On cpu: nothing to do."""
    if device != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def load_source(source: str) -> torch.Tensor:
    """(3, H, W) float in [0, 1] from a path or ``skimage:<name>``; raises on unreadable."""
    from pixperfect.data.photos import load_skimage_photo
    from pixperfect.imageio import read_image, to_rgb_float

    if source.startswith("skimage:"):
        return load_skimage_photo(source.split(":", 1)[1])
    return to_rgb_float(read_image(source).pixels)


def sim_from_dict(sim: dict) -> SimConfig:
    """The recipe's plain-dict simulation section back to the typed config."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SimConfig), sim))


def _sidecar(out: Path, index: int) -> Path:
    return out / shard_name(index).replace(".tar", ".json")


def shard_is_complete(out: Path, index: int) -> bool:
    sidecar, tar = _sidecar(out, index), out / shard_name(index)
    if not (sidecar.is_file() and tar.is_file()):
        return False
    try:
        return json.loads(sidecar.read_text())["bytes"] == tar.stat().st_size
    except (ValueError, KeyError):
        return False


def _note_full(error: BaseException, file: str, size: int = 0, samples: int = 0) -> None:
    """Tag a no-space error with what was being written (kept when it crosses processes), for
    :func:`_disk_full_message`; the first tag wins."""
    if isinstance(error, OSError) and error.errno in FULL and not hasattr(error, "full_at"):
        error.full_at = {"file": file, "bytes": size, "samples": samples}


def _atomic_write(path: Path, text: str) -> None:
    """``text`` to ``path`` whole or not at all (:func:`pixperfect.atomic.atomic_file`), through
    a ``.partial`` file of this process: array tasks may race on the manifest."""
    try:
        with atomic_file(path, path.with_name(f"{path.name}.{os.getpid()}.partial")) as stream:
            stream.write(text.encode("utf-8"))
    except BaseException as e:
        _note_full(e, path.name)
        raise


def _remove_leftovers(out: Path, indices) -> None:
    """``.partial`` files of these shards (tar and sidecar) that a killed build left behind."""
    for i in indices:
        for leftover in out.glob(shard_name(i).removesuffix(".tar") + ".*partial"):
            leftover.unlink(missing_ok=True)


def _crops(spec: BuildSpec, samples: list[tuple[int, int]]):
    """(key, crop, origin params) per sample; unreadable and (if so configured) too-small
    photos yield a skip record ``(key, None, reason)`` instead."""
    cache: dict[int, torch.Tensor | str] = {}
    for src, crop_index in samples:
        key = f"{src:06d}-{crop_index:04d}"
        if src not in cache:
            cache.clear()  # photos come in runs: keep one decoded at a time
            try:
                cache[src] = load_source(spec.sources[src])
            except (OSError, ValueError) as e:
                cache[src] = f"{spec.sources[src]}: unreadable ({e})"
        image = cache[src]
        if isinstance(image, str):
            yield key, None, image
            continue
        if spec.small_images == "skip" and min(image.shape[-2:]) < spec.size:
            h, w = image.shape[-2:]
            yield key, None, f"{spec.sources[src]}: {w}x{h} is smaller than {spec.size}px"
            continue
        generator = torch.Generator().manual_seed(derive_seed(spec.seed, src, crop_index))
        crop, origin = random_crop_with_origin(image, spec.size, generator)
        origin = {"source": spec.sources[src], "crop_index": crop_index, **origin}
        yield key, crop, (origin, generator)


def _params_slice(params: dict, i: int) -> dict:
    return {f: {k: v[i].tolist() for k, v in p.items()} for f, p in params.items()}


def _cat_params(parts: list[dict]) -> dict:
    return {f: {k: torch.cat([p[f][k] for p in parts]) for k in parts[0][f]} for f in parts[0]}


def build_shard(spec: BuildSpec, index: int, out: Path) -> dict:
    """Write shard ``index`` (``.partial`` name, fsync, rename), then its sidecar the same way;
    return the sidecar. On failure neither is left: no ``.partial`` file, and no tar without
    its sidecar (a no-space error is tagged with the bytes and samples written, see
    :func:`_note_full`). Artifacts are simulated on ``spec.device`` (deterministically, see
    the module doc)."""
    with deterministic(spec.device if spec.kind == "artifact" else "cpu"):
        return _build_shard(spec, index, out)


def _build_shard(spec: BuildSpec, index: int, out: Path) -> dict:
    partial, tar = out / (shard_name(index) + ".partial"), out / shard_name(index)
    progress = {"samples": 0, "renamed": False}
    try:
        count, skipped = _write_tar(spec, index, partial, progress)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        _sidecar(out, index).unlink(missing_ok=True)  # an old one never vouches for a new tar
        os.replace(partial, tar)
        progress["renamed"] = True
        fsync_dir(out)
    except BaseException as e:
        size = partial.stat().st_size if partial.exists() else 0
        _note_full(e, shard_name(index), size, progress["samples"])
        partial.unlink(missing_ok=True)
        if progress["renamed"]:
            tar.unlink(missing_ok=True)
        raise
    record = {
        "name": shard_name(index),
        "samples": count,
        "bytes": tar.stat().st_size,
        "sha256": digest,
        "skipped": skipped,
    }
    try:
        _atomic_write(_sidecar(out, index), json.dumps(record, indent=1, sort_keys=True))
    except BaseException:
        tar.unlink(missing_ok=True)  # no sidecar, no shard: its room is freed, a rerun rebuilds it
        raise
    return record


def _write_tar(spec: BuildSpec, index: int, partial: Path, progress: dict) -> tuple[int, list]:
    """The shard's samples into ``partial``, fsynced; (samples written, skip lines).
    ``progress["samples"]`` counts the samples written so far."""
    simulator = ArtifactSimulator(sim_from_dict(spec.sim)) if spec.kind == "artifact" else None
    device = torch.device(spec.device)
    skipped: list[str] = []
    count = 0
    with open(partial, "wb") as stream:
        writer = wds.TarWriter(
            stream,
            encoder=False,
            mtime=0,  # fixed for reproducible bytes; an int, as a float costs a pax header
            user="pixperfect",
            group="pixperfect",
        )
        pending: list[tuple[str, torch.Tensor, dict, torch.Generator]] = []

        def flush() -> None:
            nonlocal count
            if not pending:
                return
            clean = torch.stack([p[1] for p in pending])
            if simulator is None:
                batch, params = {"target": clean}, None
            else:
                s = spec.size
                params = _cat_params([simulator.sample_params(1, s, s, p[3]) for p in pending])
                # Drawn on the CPU, simulated on the device, encoded on the CPU (no-ops on cpu).
                batch = simulator.apply(clean.to(device), params)
                batch = {k: v.cpu() for k, v in batch.items()}
            for i, (key, _, origin, _) in enumerate(pending):
                meta = {"origin": origin}
                if params is not None:
                    meta["sim"] = _params_slice(params, i)
                sample = {k: v[i] for k, v in batch.items()}
                writer.write(encode_sample(key, sample, meta, spec.kind, spec.image_format))
                count += 1
                progress["samples"] = count
            pending.clear()

        try:
            for key, crop, info in _crops(spec, spec.shard_samples(index)):
                if crop is None:
                    skipped.append(f"{key}: {info}")
                    continue
                origin, generator = info
                pending.append((key, crop, origin, generator))
                if len(pending) == SIM_BATCH:
                    flush()
            flush()
            writer.close()
        except BaseException:
            # The file is dropped: mark tarfile's stream closed, or collecting it would write
            # its buffer to the closed file and print an "Exception ignored" traceback.
            writer.tarstream.closed = True
            if hasattr(writer.tarstream.fileobj, "closed"):
                writer.tarstream.fileobj.closed = True
            raise
        stream.flush()
        os.fsync(stream.fileno())
    return count, skipped


def _worker_init() -> None:
    # Worker processes split the cores between them instead of each taking all of them.
    torch.set_num_threads(1)


def _task_from_env(task_index: int | None, num_tasks: int | None) -> tuple[int, int]:
    if task_index is None:
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        task_index = int(os.environ.get("SLURM_ARRAY_TASK_ID", first)) - first
    if num_tasks is None:
        num_tasks = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
    if not 0 <= task_index < num_tasks:
        raise ValueError(f"--task-index {task_index} is outside 0..{num_tasks - 1} (--num-tasks)")
    return task_index, num_tasks


def _check_plan(spec: BuildSpec, out: Path) -> None:
    """Refuse to mix recipes in one folder; record the recipe on first use."""
    plan = {"recipe": spec.recipe(), "recipe_hash": spec.recipe_hash(), "shards": spec.num_shards}
    path = out / PLAN
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("recipe_hash") == plan["recipe_hash"]:
            return
        # Compared as JSON, as stored: tuples in the config are lists on disk.
        recipe = json.loads(json.dumps(plan["recipe"]))
        before = old.get("recipe", {})
        if before.get("kind") == "artifact":
            # Artifact plans written before the device was recorded were built on the CPU.
            before = {"device": "cpu", **before}
        changed = sorted(k for k in recipe.keys() | before.keys() if before.get(k) != recipe.get(k))
        if not changed:  # such an old plan, same recipe otherwise
            return
        if "device" in changed and before.get("device") and recipe.get("device"):
            others = [k for k in changed if k != "device"]
            also = f" (the recipe also differs in: {', '.join(others)})" if others else ""
            raise ValueError(
                f"{out} holds shards built on {before['device']}, this build runs on "
                f"{recipe['device']}: the simulation's random noise differs between device "
                f"kinds; build on {before['device']} (--device {before['device']}) or use a "
                f"new --out{also}"
            )
        why = (
            " (built by another version of the artifact simulator, data_sim.SIM_VERSION)"
            if "sim_version" in changed
            else ""
        )
        raise ValueError(
            f"{out} holds shards of another recipe (differs in: {', '.join(changed)}){why}; "
            "use a new --out, or delete the folder to rebuild"
        )
    _atomic_write(path, json.dumps(plan, indent=1, sort_keys=True))


def write_manifest_if_complete(spec: BuildSpec, out: Path) -> Path | None:
    """``manifest.json`` from the sidecars once every shard is complete (else None)."""
    if not all(shard_is_complete(out, i) for i in range(spec.num_shards)):
        return None
    shards = [json.loads(_sidecar(out, i).read_text()) for i in range(spec.num_shards)]
    manifest = {
        "tool": "pixperfect",
        "version": __version__,
        "kind": spec.kind,
        "recipe": spec.recipe(),
        "recipe_hash": spec.recipe_hash(),
        "seed": spec.seed,
        "size": spec.size,
        "num_shards": len(shards),
        "num_samples": sum(s["samples"] for s in shards),
        "shards": [{k: s[k] for k in ("name", "samples", "bytes", "sha256")} for s in shards],
        "skipped": [f"{s['name']}: {line}" for s in shards for line in s["skipped"]],
    }
    path = out / MANIFEST
    _atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def build(
    spec: BuildSpec,
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

    ``device`` (auto, cpu or cuda) overrides ``spec.device``; either is resolved here
    (:func:`resolve_device`), so ``spec.device="auto"`` works too.

    Raises :class:`DiskFullError` when the folder runs out of space (or quota), in this
    process or a worker's, after the workers stopped and their ``.partial`` files are gone:
    complete shards are kept, and the same call after freeing space resumes."""
    spec = replace(spec, device=resolve_device(spec.device if device is None else device))
    spec.validate()
    out = Path(out)
    task_index, num_tasks = _task_from_env(task_index, num_tasks)
    mine = range(task_index, spec.num_shards, num_tasks)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _build(spec, out, workers, task_index, num_tasks, mine, progress)
    except OSError as e:
        if e.errno not in FULL:
            raise
        _remove_leftovers(out, (i for i in mine if not shard_is_complete(out, i)))
        raise DiskFullError(_disk_full_message(spec, out, mine, num_tasks, e)) from e


def _human(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _disk_full_message(
    spec: BuildSpec, out: Path, mine: range, num_tasks: int, error: OSError
) -> str:
    """One line: the folder, what failed, the room the shards still to build need (bytes per
    sample of the complete shards, else of the shard that failed, else uncompressed) and the
    room free, and that a rerun resumes."""
    at = getattr(error, "full_at", {})
    left = [i for i in mine if not shard_is_complete(out, i)]
    complete = [i for i in range(spec.num_shards) if shard_is_complete(out, i)]
    done = [json.loads(_sidecar(out, i).read_text()) for i in complete]
    if sum(r["samples"] for r in done):
        per_sample = sum(r["bytes"] for r in done) / sum(r["samples"] for r in done)
    elif at.get("samples"):
        per_sample = at["bytes"] / at["samples"]
    else:  # nothing written yet: uncompressed 8-bit planes (target, composite, mask, alpha)
        per_sample = spec.size**2 * (3 if spec.kind == "clean" else 8) + 4096
    need = per_sample * sum(len(spec.shard_samples(i)) for i in left)
    need += 4096 * (len(left) + 1) + 256 * spec.num_shards  # sidecars and the manifest
    existing = next(p for p in (out, *out.parents) if p.exists())  # mkdir may have failed
    free = shutil.disk_usage(existing).free
    what = at.get("file") or (Path(error.filename).name if error.filename else "a file")
    mine_note = " of this task" if num_tasks > 1 else ""
    todo = (
        f"the {len(left)} shard(s){mine_note} still to build need about {_human(need)}"
        if left
        else f"every shard{mine_note} is complete, the manifest needs about {_human(need)}"
    )
    more = f"free at least {_human(need - free)} more" if need > free else "free more space"
    return (
        f"{out}: {os.strerror(error.errno).lower()} while writing {what}: {todo}, "
        f"{_human(free)} is free there; {more}, then rerun the same command: it keeps the "
        f"{len(done)} complete shard(s) and resumes the build"
    )


def _build(
    spec: BuildSpec,
    out: Path,
    workers: int,
    task_index: int,
    num_tasks: int,
    mine: range,
    progress: bool,
) -> dict:
    sim_device = spec.device if spec.kind == "artifact" else "cpu"
    _check_plan(spec, out)
    todo = [i for i in mine if not shard_is_complete(out, i)]
    _remove_leftovers(out, todo)  # of a killed run of this task
    planned = sum(len(spec.shard_samples(i)) for i in todo)
    task = f" {task_index + 1}/{num_tasks}" if num_tasks > 1 else ""
    bar = tqdm(
        total=planned,
        unit="sample",
        desc=f"shards{task} on {sim_device}",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 10,
        dynamic_ncols=True,
    )
    records = []
    start = time.perf_counter()
    with bar:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                records.append(build_shard(spec, i, out))
                bar.update(len(spec.shard_samples(i)))
        else:
            ctx = get_context("spawn")  # no forked torch thread pools
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
                futures = {pool.submit(build_shard, spec, i, out): i for i in todo}
                try:
                    for future in as_completed(futures):
                        records.append(future.result())
                        bar.update(len(spec.shard_samples(futures[future])))
                except BaseException:
                    # Queued shards are dropped; running ones end (on a full disk, at their
                    # next write) and remove their .partial files before the pool is gone.
                    pool.shutdown(cancel_futures=True)
                    raise
    seconds = time.perf_counter() - start
    skipped = [line for r in records for line in r["skipped"]]
    if skipped:
        log.warning("skipped %d sample(s):\n  %s", len(skipped), "\n  ".join(skipped[:20]))
    manifest = write_manifest_if_complete(spec, out)
    return {
        "built": len(todo),
        "kept": len(mine) - len(todo),
        "samples": sum(r["samples"] for r in records),
        "manifest": manifest,
        "num_shards": spec.num_shards,
        "device": sim_device,
        "seconds": seconds,
    }
