"""Training straight from a webdataset image corpus (``data.source=corpus``): no re-packing.

This module owns the corpus's training stream: which input shards each (rank, loader
worker) slot reads, the random clean crops made in the workers, and the per-reason skip
counts carried in the batches. It reuses the shard reader's guarantees
(:mod:`pixperfect.shards.reader`) and the corpus's hygiene (:mod:`pixperfect.corpus`).

- ``resample=true``: each slot draws input shards with replacement, seeded like the shard
  reader (run seed, rank, worker; a resumed run folds its step into the seed).
- ``resample=false``: slot ``s`` of ``S = ranks x workers`` reads input shards ``s, s + S,
  ...``, each once per pass, every pass in its own seeded order, pass after pass. A worker
  keeps its place across epochs, so the epoch cap does not restart a pass; the images in
  flight at a cap (the shard being read, the shuffle buffer) are dropped. Fewer input
  shards than slots is an error naming both counts.
- Both are endless and capped with ``with_epoch`` at ``epoch_samples / (batch_size x
  workers)`` batches per worker, so every rank steps the same number of times.
- Each kept image gives one ``data.crop_size`` crop (``data.crop_scale`` and the left-right
  flip of :func:`pixperfect.data.crops.random_crop`), uint8: batches are those of clean
  shards, ``{"target": (B, 3, H, W) uint8}``, and the training step simulates the artifacts.
- Images the hygiene rejects, and failed tar reads (``read_error``), are skipped and counted
  per reason (:data:`pixperfect.corpus.images.SKIP_REASONS`). Batches carry the worker's
  total (``corrupt_skipped``), its id (``worker_id``) and its counts per reason
  (``skipped_by_reason``); the training module sums them over workers and ranks into
  ``data/corrupt_skipped`` and ``data/skipped_<reason>`` (:func:`skipped_scalars`).
- A read failure streak with no record in between stops the stream
  (:class:`~pixperfect.shards.reader.ShardReadError`), and so does a slot that keeps no
  image in a whole pass (without resampling) or in :data:`DRAWS_PER_ROUND` or more draws
  in a row (with it): a rank must not spin for ever while the others wait.

No list of images is held anywhere: only the input shard URLs and per-worker counters (and
with ``data.dedupe`` a bounded window of content hashes).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict

import numpy as np
import torch
import webdataset as wds

from data_sim.sampling import derive_seed
from pixperfect.corpus import Hygiene, SkipTally, corpus_shards
from pixperfect.corpus.images import DEDUPE_WINDOW, SKIP_REASONS, checked_image
from pixperfect.data.crops import random_crop
from pixperfect.errors import ConfigError
from pixperfect.shards.reader import (
    AttachMeta,
    ReadProgress,
    SeededShuffle,
    SkipCounter,
    WorkerSeed,
    _worker,
    batches_per_worker,
)

BY_REASON = "skipped_by_reason"  # the batch key of a worker's counts per skip reason
DRAWS_PER_ROUND = 64  # with resampling: drawn shards in a row that may keep no image


class CorpusSkips(SkipTally):
    """A worker's :class:`~pixperfect.corpus.SkipTally`, with ``count`` (all skips) for
    :class:`~pixperfect.shards.reader.AttachMeta`."""

    @property
    def count(self) -> int:
        return sum(self.skipped.values())


class ReadFailures(SkipCounter):
    """The tar reader's error handler: each failure is a ``read_error`` in ``tally``, and
    (with a :class:`~pixperfect.shards.reader.ReadProgress` stage) a streak of them stops a
    source that is gone for good."""

    def __init__(self, tally: SkipTally) -> None:
        super().__init__()
        self.tally = tally

    def __call__(self, exn: BaseException) -> bool:
        self.tally.counts["read_error"] += 1
        return super().__call__(exn)


class SlotShards:
    """Without resampling: this slot's input shards ``slot, slot + slots, ...``, each once
    per pass, each pass in an order seeded by (seed, rank, worker, pass); endless. The place
    in the pass lives on across iterations (epochs) of a persistent worker."""

    def __init__(self, urls: list[str], rank: int, world_size: int, seed: int) -> None:
        self.urls, self.rank, self.world_size, self.seed = urls, rank, world_size, seed
        self.rounds = 0  # passes started
        self.order: list[int] = []
        self.position = 0

    def __call__(self):
        worker, workers = _worker()
        slots = self.world_size * workers
        mine = self.urls[self.rank * workers + worker :: slots]
        while True:
            if self.position >= len(self.order):
                rng = random.Random(derive_seed(self.seed, self.rank, worker, self.rounds))
                self.order = rng.sample(range(len(mine)), len(mine))
                self.position, self.rounds = 0, self.rounds + 1
            self.position += 1
            yield {"url": mine[self.order[self.position - 1]]}


class DrawnShards:
    """With resampling: input shards drawn with replacement, as the shard reader draws them
    (:class:`~pixperfect.shards.reader.WorkerSeed`); a round is :data:`DRAWS_PER_ROUND`
    draws."""

    def __init__(self, urls: list[str], rank: int, seed: int) -> None:
        self.shards = wds.ResampledShards(
            urls, seed=seed, worker_seed=WorkerSeed(seed, rank), deterministic=True
        )
        self.draws = 0

    @property
    def rounds(self) -> int:
        return self.draws // DRAWS_PER_ROUND

    def __call__(self):
        for shard in self.shards:
            self.draws += 1
            yield shard


class SeenElsewhere:
    """The last ``window`` content hashes, each with the sample it was first read under: the
    same sample read again (a shard drawn again, the next pass) is no duplicate of itself,
    the same bytes under another key or shard are. Set ``origin`` before :meth:`add`."""

    def __init__(self, window: int = DEDUPE_WINDOW) -> None:
        self.window, self.first, self.origin = window, OrderedDict(), ""

    def add(self, data: bytes) -> bool:
        """True when ``data`` was read before under another origin."""
        h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
        origin = hash(self.origin)
        if h in self.first:
            self.first.move_to_end(h)
            return self.first[h] != origin
        self.first[h] = origin
        if len(self.first) > self.window:
            self.first.popitem(last=False)
        return False


def uint8_crop(
    pixels: np.ndarray, size: int, generator: torch.Generator, scale: tuple[float, float]
) -> torch.Tensor:
    """:func:`~pixperfect.data.crops.random_crop` of an (H, W, 3) uint8 image, as a (3, size,
    size) uint8 tensor: cut from the uint8 pixels when nothing is resampled (native scale,
    no upscaling), else through float and rounded back."""
    image = torch.from_numpy(pixels).permute(2, 0, 1)
    if tuple(scale) == (1.0, 1.0) and min(image.shape[-2:]) >= size:
        return random_crop(image, size, generator).contiguous()
    crop = random_crop(image.float() / 255, size, generator, scale)
    return (crop * 255).round().to(torch.uint8)


class CorpusCrops:
    """Records to ``{"target": crop}``: each image the hygiene keeps gives one random crop;
    the rest are skipped and counted in ``tally``. Raises when ``shards`` went through two
    rounds without a kept image (see the module docstring)."""

    def __init__(
        self,
        hygiene: Hygiene,
        tally: CorpusSkips,
        shards: SlotShards | DrawnShards,
        crop: tuple[int, tuple[float, float]],
        seed: int,
        rank: int,
    ) -> None:
        self.hygiene, self.tally, self.shards = hygiene, tally, shards
        (self.size, self.scale), self.seed, self.rank = crop, seed, rank
        self.iterations = 0  # per worker process: each epoch crops anew
        self.seen = SeenElsewhere() if hygiene.dedupe else None
        self.kept_round = 0

    def __call__(self, records):
        worker = _worker()[0]
        generator = torch.Generator().manual_seed(
            derive_seed(self.seed, self.rank, worker, self.iterations, 2)
        )
        self.iterations += 1
        for record in records:
            if self.seen is not None:
                self.seen.origin = f"{record.get('__url__')}\0{record.get('__key__')}"
            image = checked_image(record, self.hygiene, self.tally, self.seen)
            if image is None:
                self._check_progress(worker)
                continue
            self.kept_round = self.shards.rounds
            yield {"target": uint8_crop(image.pixels, self.size, generator, self.scale)}

    def _check_progress(self, worker: int) -> None:
        if self.shards.rounds < self.kept_round + 2:
            return
        what = (
            f"{DRAWS_PER_ROUND} or more drawn input shards in a row"
            if isinstance(self.shards, DrawnShards)
            else "a whole pass over its input shards"
        )
        raise RuntimeError(
            f"rank {self.rank} worker {worker}: {what} kept no image (skipped so far: "
            f"{self.tally.skipped or 'none'}; read: {self.tally.counts['read']}); check "
            "data.corpus, and data.min_side / data.small_images if they are too_small"
        )


class AttachSkips(AttachMeta):
    """:class:`~pixperfect.shards.reader.AttachMeta` plus the worker's counts per skip
    reason (``skipped_by_reason``, in :data:`SKIP_REASONS` order)."""

    def __call__(self, batch: dict) -> dict:
        batch = super().__call__(batch)
        batch[BY_REASON] = torch.tensor([self.counter.counts[r] for r in SKIP_REASONS])
        return batch


def skipped_scalars(by_worker: dict[int, torch.Tensor]) -> dict[str, float]:
    """``data/skipped_<reason>``: the workers' latest counts per reason, summed."""
    if not by_worker:
        return {}
    total = torch.stack([c.reshape(-1) for c in by_worker.values()]).sum(0).tolist()
    return {f"data/skipped_{r}": float(n) for r, n in zip(SKIP_REASONS, total, strict=True)}


def corpus_stream(
    corpus: str,
    batch_size: int,
    crop_size: int,
    *,
    hygiene: Hygiene | None = None,
    crop_scale: tuple[float, float] = (1.0, 1.0),
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    seed: int = 0,
    resample: bool = True,
    epoch_samples: int = 2048,
    shuffle_buffer: int = 256,
) -> wds.DataPipeline:
    """The training pipeline for one rank over the corpus ``corpus`` (a pattern, URL or
    ``.txt`` list; :func:`pixperfect.corpus.corpus_shards`): batches of clean uint8 crops,
    the same number per worker per iteration. ``hygiene`` defaults to skipping images whose
    shorter side is under ``crop_size``. Use with ``DataLoader(stream, batch_size=None,
    num_workers=workers)``."""
    urls = corpus_shards(corpus)
    hygiene = hygiene or Hygiene(min_side=crop_size)
    slots = world_size * max(1, workers)
    if not resample and len(urls) < slots:
        raise ConfigError(
            f"{corpus} has {len(urls)} input shard(s) but {world_size} rank(s) x "
            f"{max(1, workers)} worker(s) need at least {slots} with data.resample=false: "
            "lower data.num_workers or set data.resample=true"
        )
    tally = CorpusSkips()
    failures = ReadFailures(tally)
    shards = DrawnShards(urls, rank, seed) if resample else SlotShards(urls, rank, world_size, seed)
    stages = [
        shards,
        wds.tarfile_to_samples(handler=failures),
        ReadProgress(failures),  # a source that fails every read stops the stream
        CorpusCrops(hygiene, tally, shards, (crop_size, tuple(crop_scale)), seed, rank),
        *([SeededShuffle(shuffle_buffer, seed, rank)] * (shuffle_buffer > 1)),
        wds.batched(batch_size, partial=False),
        wds.map(AttachSkips(tally, rank)),
    ]
    cap = batches_per_worker({}, batch_size, workers, world_size, True, epoch_samples)
    return wds.DataPipeline(*stages).with_epoch(nbatches=cap)
