"""Streaming shards into training without DDP hangs or dead workers.

- Every (rank, worker) yields exactly ``batches_per_worker`` batches per virtual epoch: the
  shards are resampled with replacement (an endless stream) and capped with
  ``with_epoch``, so every rank steps the same number of times. Without resampling, shards
  are split explicitly by rank, then by worker, and the cap is what an even split gives.
- A corrupt sample or an unreadable/truncated shard is skipped, counted and logged
  (rate-limited), never fatal. Each batch carries its worker's running count
  (``corrupt_skipped``) and id (``worker_id``); the training module sums them for
  TensorBoard.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import get_worker_info

from data_sim.sampling import derive_seed
from pixperfect.shards.build import MANIFEST
from pixperfect.shards.format import decode_sample

log = logging.getLogger(__name__)
META_KEYS = ("corrupt_skipped", "worker_id")


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: build the shards with `pixperfect shards build --out {folder}` "
            "(an interrupted build writes the manifest when rerun to completion)"
        )
    manifest = json.loads(path.read_text())
    manifest["urls"] = [str(Path(folder) / s["name"]) for s in manifest["shards"]]
    return manifest


class SkipCounter:
    """A webdataset error handler: count, log the first few and then every 100th, go on."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, exn: BaseException) -> bool:
        self.count += 1
        if self.count <= 5 or self.count % 100 == 0:
            log.warning("skipped corrupt data (%d so far in this worker): %s", self.count, exn)
        return True  # keep going


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


class WorkerSeed:
    """Seed of a (run seed, rank, worker) stream for webdataset's resampler (picklable)."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed, self.rank = seed, rank

    def __call__(self) -> int:
        return derive_seed(self.seed, self.rank, _worker()[0])


class SplitByRank:
    """Explicit node splitter: shard ``i`` goes to rank ``i % world_size`` (no reliance on
    torch.distributed being initialised in the worker)."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def __call__(self, src):
        for i, item in enumerate(src):
            if i % self.world_size == self.rank:
                yield item


class Decode:
    def __init__(self, kind: str, as_uint8: bool = False) -> None:
        self.kind, self.as_uint8 = kind, as_uint8

    def __call__(self, record: dict) -> dict:
        return decode_sample(record, self.kind, self.as_uint8)


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
    """The per-worker cap: from ``epoch`` samples per rank when resampling, else what an
    even split of the shards' samples allows."""
    workers = max(1, workers)
    if resample:
        return max(1, epoch // (batch_size * workers))
    return max(1, manifest["num_samples"] // (world_size * workers * batch_size))


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
        shards = [
            wds.ResampledShards(
                manifest["urls"], seed=seed, worker_seed=WorkerSeed(seed, rank), deterministic=True
            )
        ]
    else:
        shards = [wds.SimpleShardList(manifest["urls"]), SplitByRank(rank, world_size)]
        shards.append(wds.split_by_worker)
    stages = [
        *shards,
        wds.tarfile_to_samples(handler=counter),
        *([wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 64))] * (shuffle_buffer > 1)),
        # uint8 until the training step: a quarter of the bytes through worker queues and
        # to the device (pixperfect.shards.format.to_float).
        wds.map(Decode(manifest["kind"], as_uint8=True), handler=counter),
        wds.batched(batch_size, partial=False),
        wds.map(AttachMeta(counter, rank)),
    ]
    cap = batches_per_worker(manifest, batch_size, workers, world_size, resample, epoch_samples)
    # with_epoch cuts the endless resampled stream; without resampling it also repeats a
    # worker's shards when an uneven split leaves it short, so no rank ever runs dry first.
    return wds.DataPipeline(*stages).with_epoch(nbatches=cap)


def read_all(folder: str | Path) -> list[dict]:
    """Every decodable sample of a (small, validation) shard set, in manifest order, as a
    list for a map-style dataset; corrupt ones are skipped and counted in the log."""
    manifest = read_manifest(folder)
    counter = SkipCounter()
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(manifest["urls"]),
        wds.tarfile_to_samples(handler=counter),
        wds.map(Decode(manifest["kind"]), handler=counter),
    )
    samples = list(pipeline)
    if counter.count:
        log.warning("%s: skipped %d corrupt sample(s) or shard(s)", folder, counter.count)
    return samples


def shards_needed(workers: int, world_size: int) -> int:
    return max(1, workers) * world_size


def check_enough_shards(folder: str | Path, workers: int, world_size: int) -> dict:
    """Refuse before launch when some worker would get no shard of its own."""
    manifest = read_manifest(folder)
    need = shards_needed(workers, world_size)
    if manifest["num_shards"] < need:
        raise ValueError(
            f"{folder} has {manifest['num_shards']} shard(s) but {world_size} rank(s) x "
            f"{max(1, workers)} worker(s) need at least {need}: rebuild with a smaller "
            f"--shard-size (now {math.ceil(manifest['num_samples'] / manifest['num_shards'])}) "
            "or lower data.num_workers"
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
        wds.tarfile_to_samples(handler=SkipCounter()),  # a damaged shard is passed over too
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
        raise ValueError(f"{folder}: no samples in any shard (manifest.json lists the skipped)")
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    return batch, captions
