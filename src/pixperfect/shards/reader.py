"""Streaming shards into training without DDP hangs or dead workers.

Every rank steps the same number of times (uneven batch counts are the classic DDP hang):
every (rank, worker) "slot" yields exactly ``batches_per_worker`` batches per epoch.

- ``resample=true``: shards are drawn with replacement (an endless stream, one seed per
  slot) and capped with ``with_epoch``.
- ``resample=false``: one epoch reads the samples in manifest order (shard by shard), and
  slot ``s = rank * workers + worker`` reads the contiguous range ``[s * P, (s + 1) * P)``
  with ``P = batch_size * floor(N / (slots * batch_size))``: each of those samples exactly
  once. The last ``N - slots * P`` samples in manifest order (fewer than one batch per slot)
  are dropped, because every slot must yield the same number of full batches
  (:func:`epoch_plan`). A slot whose range lost samples to damage reads its range again
  until its batches are full.
- A corrupt sample or an unreadable/truncated shard is skipped, counted and logged
  (rate-limited), never fatal. Each batch carries its worker's running count
  (``corrupt_skipped``) and id (``worker_id``); the training module sums them over the
  workers of every rank for TensorBoard.
- Artifact samples carry their artifact ``families`` (from ``params.json``), a string each,
  for the training diagnostics' per-family curves (:func:`record_families`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import get_worker_info

from data_sim.sampling import derive_seed
from data_sim.simulator import family_names
from pixperfect.errors import ConfigError, InputError
from pixperfect.shards.format import decode_sample
from pixperfect.shards.locations import require_counts, resolve

log = logging.getLogger(__name__)
MAX_FAILED_READS = 20  # failed reads in a row, no sample between, before the source is dead
MAX_FAILING_S = 300.0  # ... or seconds of failed reads in a row (each may wait for a timeout)


def read_manifest(folder: str | Path) -> dict:
    """The manifest of ``data.shards`` with ``urls`` (one per shard) and ``location`` added:
    a local folder, a manifest URL or a shard URL pattern (for a pattern without manifest,
    ``num_samples`` and the shards' counts are ``None``); see
    :mod:`pixperfect.shards.locations`."""
    return resolve(folder)


class ShardReadError(RuntimeError):
    """Reading shards failed too many times in a row: the source is gone, not one shard."""


class SkipCounter:
    """A webdataset error handler: count, log the first few and then every 100th, go on.

    In a pipeline with a :class:`ReadProgress` stage (which resets the streak on every
    sample read), ``limit`` failures in a row with no sample read in between, or failures
    in a row for ``seconds`` (when each waits for a timeout), raise :class:`ShardReadError`
    naming the last URL and error, so a server gone for good stops the stream instead of
    spinning. Without that stage failures are only counted."""

    def __init__(self, limit: int = MAX_FAILED_READS, seconds: float = MAX_FAILING_S) -> None:
        self.count = 0
        self.streak = 0
        self.limit, self.seconds = limit, seconds
        self.watched = False  # set by ReadProgress: only then is a streak meaningful
        self._since = 0.0

    def __call__(self, exn: BaseException) -> bool:
        self.count += 1
        self.streak += 1
        if self.count <= 5 or self.count % 100 == 0:
            log.warning("skipped corrupt data (%d so far in this worker): %s", self.count, exn)
        now = time.monotonic()
        if self.streak == 1:
            self._since = now
        if self.watched and (self.streak >= self.limit or now - self._since >= self.seconds):
            args = [a for a in getattr(exn, "args", ()) if isinstance(a, str)]
            detail = args[0] if args else str(exn)
            if len(args) > 1 and args[-1] not in detail:
                detail = f"{args[-1]}: {detail}"  # webdataset appends the URL to the args
            raise ShardReadError(
                f"{self.streak} shard reads in a row failed over {now - self._since:.0f} s "
                f"with no sample read in between (the last: {type(exn).__name__}: {detail}); "
                "check that the server, bucket or file system holding the shards is up and "
                "reachable from this machine, and that data.shards points at them"
            ) from exn
        return True  # keep going


class ReadProgress:
    """A pipeline stage right after the one reading records (``tarfile_to_samples``):
    passes them through, each resetting ``counter``'s streak of failed reads, and arms
    ``counter``'s limit on that streak."""

    def __init__(self, counter: SkipCounter) -> None:
        self.counter = counter
        counter.watched = True

    def __call__(self, samples):
        for sample in samples:
            self.counter.streak = 0
            yield sample


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


class WorkerSeed:
    """Seed of a (run seed, rank, worker) stream for webdataset's resampler (picklable)."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed, self.rank = seed, rank

    def __call__(self) -> int:
        return derive_seed(self.seed, self.rank, _worker()[0])


class SeededShuffle:
    """webdataset's buffer shuffle with a seed per (run seed, rank, worker, pass): the same
    seed gives the same batches (``wds.shuffle`` seeds from the pid and the clock)."""

    def __init__(self, bufsize: int, seed: int, rank: int) -> None:
        self.bufsize, self.seed, self.rank = bufsize, seed, rank
        self.passes = 0  # per worker process: persistent workers shuffle each pass anew

    def __call__(self, src):
        rng = random.Random(derive_seed(self.seed, self.rank, _worker()[0], self.passes))
        self.passes += 1
        return wds.shuffle(self.bufsize, initial=min(self.bufsize, 64), rng=rng)(src)


def full_batches_per_slot(num_samples: int, slots: int, batch_size: int) -> int:
    """Without resampling, each of ``slots`` readers (ranks x workers) gets this many full
    batches of an equal share of the ``num_samples``: ``floor(N / (slots * batch_size))``."""
    return num_samples // (slots * batch_size)


def epoch_plan(counts: list[int], slots: int, batch_size: int) -> list[list[tuple[int, int, int]]]:
    """Each slot's share of one epoch without resampling, as ``(shard index, first, stop)``
    sample ranges inside shards: slot ``s`` gets the samples ``[s * P, (s + 1) * P)`` of the
    manifest order, ``P = batch_size *`` :func:`full_batches_per_slot`; the rest are
    dropped (see the module docstring)."""
    per_slot = batch_size * full_batches_per_slot(sum(counts), slots, batch_size)
    plan: list[list[tuple[int, int, int]]] = []
    for slot in range(slots):
        lo, hi = slot * per_slot, (slot + 1) * per_slot
        ranges, offset = [], 0
        for shard, count in enumerate(counts):
            first, stop = max(lo, offset) - offset, min(hi, offset + count) - offset
            if first < stop:
                ranges.append((shard, first, stop))
            offset += count
        plan.append(ranges)
    return plan


class SlotSamples:
    """The records of this (rank, worker) slot's ranges of :func:`epoch_plan`, once per
    iteration; a pass that reads nothing at all is an error (else the rank would run dry
    and the other ranks wait for it for ever)."""

    def __init__(
        self, urls: list[str], plan: list[list[tuple[int, int, int]]], rank: int, handler
    ) -> None:
        self.urls, self.plan, self.rank, self.handler = urls, plan, rank, handler

    def __call__(self):
        worker, workers = _worker()
        ranges = self.plan[self.rank * workers + worker]
        read = 0
        for shard, first, stop in ranges:
            records = wds.tarfile_to_samples(handler=self.handler)([{"url": self.urls[shard]}])
            for index, record in enumerate(records):
                if index >= stop:
                    break
                if index >= first:
                    read += 1
                    yield record
        if not read and ranges:
            names = ", ".join(self.urls[shard] for shard, _, _ in ranges)
            raise RuntimeError(
                f"rank {self.rank} worker {worker}: no sample of its share could be read "
                f"from {names} (see the warnings above); `pixperfect shards verify` names "
                "the damage"
            )


def record_families(record: dict) -> str:
    """The artifact families of an artifact sample, from its ``params.json``, joined by ``+``
    as :func:`pixperfect.data.crops.heldout_triples` labels its samples; empty for a clean
    sample, and for parameters that cannot be read (the images still train)."""
    try:
        sim = json.loads(record["params.json"])["sim"]
        params = {f: {k: torch.tensor([v]) for k, v in p.items()} for f, p in sim.items()}
        return "+".join(family_names(params, 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


class Decode:
    """A record to the batch schema; an artifact sample also carries its ``families``
    string (the training module takes it out before the batch goes to the device)."""

    def __init__(self, kind: str, as_uint8: bool = False) -> None:
        self.kind, self.as_uint8 = kind, as_uint8

    def __call__(self, record: dict) -> dict:
        sample = decode_sample(record, self.kind, self.as_uint8)
        if self.kind == "artifact":
            sample["families"] = record_families(record)
        return sample


class AttachMeta:
    """Adds the worker's skip count and its global id to every batch."""

    def __init__(self, counter: SkipCounter, rank: int) -> None:
        self.counter, self.rank = counter, rank

    def __call__(self, batch: dict) -> dict:
        worker, workers = _worker()
        batch["corrupt_skipped"] = torch.tensor(self.counter.count)
        batch["worker_id"] = torch.tensor(self.rank * workers + worker)
        return batch


def batches_per_worker(
    manifest: dict, batch_size: int, workers: int, world_size: int, resample: bool, epoch: int
) -> int:
    """The per-worker cap: from ``epoch`` samples per rank when resampling, else the full
    batches of one slot's share (:func:`epoch_plan`)."""
    workers = max(1, workers)
    if resample:
        return max(1, epoch // (batch_size * workers))
    return max(1, full_batches_per_slot(manifest["num_samples"], world_size * workers, batch_size))


def training_stream(
    folder: str | Path,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    seed: int = 0,
    resample: bool = True,
    epoch_samples: int = 2048,
    shuffle_buffer: int = 256,
) -> wds.DataPipeline:
    """The training pipeline for one rank: batches (dicts of stacked uint8 tensors, see
    :func:`pixperfect.shards.format.to_float`), exactly
    :func:`batches_per_worker` per worker per iteration. Use with
    ``DataLoader(stream, batch_size=None, num_workers=workers)``."""
    manifest = read_manifest(folder)
    counter = SkipCounter()
    if resample:
        records = [
            wds.ResampledShards(
                manifest["urls"], seed=seed, worker_seed=WorkerSeed(seed, rank), deterministic=True
            ),
            wds.tarfile_to_samples(handler=counter),
        ]
    else:
        require_counts(manifest, "data.resample=false")
        counts = [s["samples"] for s in manifest["shards"]]
        plan = epoch_plan(counts, world_size * max(1, workers), batch_size)
        records = [SlotSamples(manifest["urls"], plan, rank, counter)]
    stages = [
        *records,
        ReadProgress(counter),  # a source that fails every read stops the stream
        *([SeededShuffle(shuffle_buffer, seed, rank)] * (shuffle_buffer > 1)),
        # uint8 until the training step: a quarter of the bytes through worker queues and
        # to the device (pixperfect.shards.format.to_float).
        wds.map(Decode(manifest["kind"], as_uint8=True), handler=counter),
        wds.batched(batch_size, partial=False),
        wds.map(AttachMeta(counter, rank)),
    ]
    cap = batches_per_worker(manifest, batch_size, workers, world_size, resample, epoch_samples)
    # with_epoch cuts the endless resampled stream; without resampling it also reads a
    # slot's share again when damage left it short, so no rank ever runs dry first.
    return wds.DataPipeline(*stages).with_epoch(nbatches=cap)


def read_all(folder: str | Path) -> list[dict]:
    """Every decodable sample of a (small, validation) shard set, in manifest order, as a
    list for a map-style dataset; corrupt ones are skipped and counted in the log."""
    manifest = read_manifest(folder)
    counter = SkipCounter()
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(manifest["urls"]),
        wds.tarfile_to_samples(handler=counter),
        ReadProgress(counter),
        wds.map(Decode(manifest["kind"]), handler=counter),
    )
    samples = list(pipeline)
    if counter.count:
        log.warning("%s: skipped %d corrupt sample(s) or shard(s)", folder, counter.count)
    return samples


def shards_needed(workers: int, world_size: int) -> int:
    return max(1, workers) * world_size


def check_enough_shards(
    folder: str | Path,
    workers: int,
    world_size: int,
    batch_size: int = 1,
    resample: bool = True,
) -> dict:
    """Refuse before launch when some worker would get no shard of its own, or (without
    resampling) no full batch of its share of the samples."""
    manifest = read_manifest(folder)
    need = shards_needed(workers, world_size)
    if manifest["num_shards"] < need:
        size = manifest["num_samples"] and math.ceil(
            manifest["num_samples"] / manifest["num_shards"]
        )
        raise ConfigError(
            f"{folder} has {manifest['num_shards']} shard(s) but {world_size} rank(s) x "
            f"{max(1, workers)} worker(s) need at least {need}: rebuild with a smaller "
            f"--shard-size (now {size or 'unknown'}) or lower data.num_workers"
        )
    if not resample:
        require_counts(manifest, "data.resample=false")
    if not resample and manifest["num_samples"] < need * batch_size:
        raise ConfigError(
            f"{folder} has {manifest['num_samples']} sample(s) but {world_size} rank(s) x "
            f"{max(1, workers)} worker(s) x data.batch_size={batch_size} need at least "
            f"{need * batch_size} with data.resample=false: build more crops, lower "
            "data.num_workers or data.batch_size, or set data.resample=true"
        )
    return manifest


def preview(folder: str | Path, n: int = 8) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The first ``n`` readable samples of the shards (in manifest order; empty or damaged
    shards and corrupt samples are passed over), stacked, with a caption per sample (the stored
    simulation parameters, described as the simulator would)."""
    from data_sim.simulator import describe

    manifest = read_manifest(folder)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(manifest["urls"]),
        wds.tarfile_to_samples(handler=(counter := SkipCounter())),  # damaged: passed over
        ReadProgress(counter),
    )
    samples, captions = [], []
    for record in pipeline:
        try:
            sample, meta = (
                decode_sample(record, manifest["kind"]),
                json.loads(record["params.json"]),
            )
        except (ValueError, KeyError, OSError):
            continue  # corrupt: the training stream skips and counts it
        samples.append(sample)
        origin = meta.get("origin", {})
        caption = f"{Path(str(origin.get('source', '?'))).name} crop {origin.get('crop_index')}"
        if "sim" in meta:
            params = {
                f: {k: torch.tensor([v]) for k, v in p.items()} for f, p in meta["sim"].items()
            }
            caption += ": " + describe(params, 0)
        captions.append(caption)
        if len(samples) == n:
            break
    if not samples:
        raise InputError(f"{folder}: no samples in any shard (manifest.json lists the skipped)")
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    return batch, captions
