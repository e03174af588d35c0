"""LightningDataModules: over photos (an endless stream of random clean crops), over
precomputed shards (clean or artifact) and over a webdataset image corpus read where it is
(random clean crops made in the loader workers), each with a fixed validation set.

Batches are dicts: ``{"target"}`` when clean (the training step simulates artifacts on the
device), ``{"target", "composite", "mask", "alpha"}`` when the artifacts were precomputed.
The module simulates whatever is missing, so it does not care which source produced a batch.
Shard and corpus batches also carry ``corrupt_skipped`` and ``worker_id`` (see
``shards.reader``), corpus batches their skips per reason too (``training.corpus_stream``);
artifact samples carry ``families``, the ``+``-joined names of their artifact families
(validation triples too), which the module takes out before the batch goes to the device.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from data_sim.sampling import derive_seed
from data_sim.simulator import ArtifactSimulator
from pixperfect.config import sim_config
from pixperfect.corpus import Hygiene
from pixperfect.data.crops import heldout_triples, random_crop
from pixperfect.data.photos import heldout_photos, load_photos
from pixperfect.errors import InputError
from pixperfect.shards.reader import read_all, training_stream
from pixperfect.training.corpus_stream import corpus_stream

log = logging.getLogger(__name__)


class RandomCropStream(IterableDataset):
    """Endless random crops; each (seed, start step, rank, worker) gets its own stream."""

    def __init__(
        self,
        images: list[torch.Tensor],
        crop_size: int,
        seed: int,
        scale: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        if not images:
            raise InputError("no training images")
        self.images, self.crop_size, self.seed, self.scale = images, crop_size, seed, scale

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info else 0
        generator = torch.Generator().manual_seed(derive_seed(self.seed, worker))
        while True:
            index = int(torch.randint(len(self.images), (1,), generator=generator))
            crop = random_crop(self.images[index], self.crop_size, generator, self.scale)
            yield {"target": crop}


class ListDataset(Dataset):
    def __init__(self, samples: list[dict]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


def opencv_threads_for_workers(num_workers: int) -> None:
    """OpenCV on one thread in loader workers (48 workers per node would each start a pool of
    as many threads as the node has cores). Set here, in the training process before the
    loader forks its workers, who inherit it: ``cv2.setNumThreads`` called inside a forked
    worker deadlocks once the parent has started OpenCV's pool (the paper recipe's 2-node run
    hung in its first step that way)."""
    if num_workers > 0:
        import cv2

        cv2.setNumThreads(1)


def pin_memory(trainer: L.Trainer | None) -> bool:
    """Page-locked batches on CUDA: the copy to the GPU is then asynchronous (Lightning
    moves batches with ``non_blocking=True``) and does not stall the step."""
    return trainer is not None and trainer.strategy.root_device.type == "cuda"


def validation_samples(cfg: DictConfig, held: dict[str, torch.Tensor]) -> list[dict]:
    """The fixed validation set: artifact shards (``data.val_shards``) if given, else
    seeded artifact triples from held-out photos. A list, so Lightning's distributed
    sampler splits it equally across ranks."""
    d = cfg.data
    if d.val_shards:
        return read_all(d.val_shards)
    if not held:
        return []
    return heldout_triples(
        photos_for_val_crop(held, d.val_crop_size),
        ArtifactSimulator(sim_config(cfg)),
        d.val_samples_per_image,
        d.val_seed,
        crop_size=d.val_crop_size,
    )


def photos_for_val_crop(held: dict[str, torch.Tensor], crop: int) -> dict[str, torch.Tensor]:
    """The held-out photos whose shorter side is at least ``crop`` (``data.val_crop_size``):
    a smaller one would be upscaled into its crops, and the refiner scored on blur it never
    sees at use. Each one left out is named in a warning; none left is an error."""
    fit = {name: image for name, image in held.items() if min(image.shape[-2:]) >= crop}
    small = [f"{n} ({held[n].shape[-1]}x{held[n].shape[-2]})" for n in held if n not in fit]
    if small:
        log.warning(
            "held-out photos smaller than data.val_crop_size=%d left out of validation "
            "(they would be upscaled): %s",
            crop,
            ", ".join(small),
        )
    if not fit:
        raise InputError(
            f"no held-out photo is at least data.val_crop_size={crop} px on its shorter side "
            f"({', '.join(small)}); give data.val_images a folder of larger photos, "
            "data.val_shards artifact shards, or a smaller data.val_crop_size"
        )
    return fit


class PhotoDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_images: dict[str, torch.Tensor] = {}
        self.val_samples: list[dict] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_images:
            return
        self.train_images, held = load_photos(self.cfg)
        log.info("training photos: %d, held-out photos: %d", len(self.train_images), len(held))
        self.val_samples = validation_samples(self.cfg, held)

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        # A resumed run must not replay the crops it already saw: fold in the restored step.
        step = self.trainer.global_step if self.trainer else 0
        rank = self.trainer.global_rank if self.trainer else 0
        seed = derive_seed(self.cfg.run.seed, step, rank)
        stream = RandomCropStream(
            list(self.train_images.values()), d.crop_size, seed, tuple(d.crop_scale)
        )
        opencv_threads_for_workers(d.num_workers)
        return DataLoader(
            stream,
            batch_size=d.batch_size,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            pin_memory=pin_memory(self.trainer),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            ListDataset(self.val_samples),
            batch_size=self.cfg.data.batch_size,
            pin_memory=pin_memory(self.trainer),
        )


class ShardDataModule(L.LightningDataModule):
    """Training batches streamed from ``data.shards`` (equal per rank, corrupt data skipped
    and counted); validation as :func:`validation_samples`."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.val_samples: list[dict] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.val_samples is None:
            self.val_samples = validation_samples(self.cfg, heldout_photos(self.cfg))
            log.info("validation samples: %d", len(self.val_samples))

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        step = self.trainer.global_step if self.trainer else 0
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        # A resumed run draws new shards and orders: fold in the restored step.
        stream = self.stream(rank, world, derive_seed(self.cfg.run.seed, step))
        opencv_threads_for_workers(d.num_workers)
        return DataLoader(
            stream,
            batch_size=None,  # batched inside the pipeline, so the cap counts batches
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,  # the resampler's epoch counter lives on
            pin_memory=pin_memory(self.trainer),
        )

    def stream(self, rank: int, world: int, seed: int) -> IterableDataset:
        """This rank's training pipeline (:func:`pixperfect.shards.reader.training_stream`)."""
        d = self.cfg.data
        return training_stream(
            d.shards,
            d.batch_size,
            rank=rank,
            world_size=world,
            workers=d.num_workers,
            seed=seed,
            resample=d.resample,
            epoch_samples=d.epoch_samples,
            shuffle_buffer=d.shuffle_buffer,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            ListDataset(self.val_samples or []),
            batch_size=self.cfg.data.batch_size,
            pin_memory=pin_memory(self.trainer),
        )


class CorpusDataModule(ShardDataModule):
    """Training batches of random clean crops made in the loader workers straight from
    ``data.corpus`` (:func:`pixperfect.training.corpus_stream.corpus_stream`: the shard
    reader's guarantees, skips counted per reason); validation as
    :func:`validation_samples`."""

    def stream(self, rank: int, world: int, seed: int) -> IterableDataset:
        d = self.cfg.data
        return corpus_stream(
            d.corpus,
            d.batch_size,
            d.crop_size,
            hygiene=corpus_hygiene(self.cfg),
            crop_scale=tuple(d.crop_scale),
            rank=rank,
            world_size=world,
            workers=d.num_workers,
            seed=seed,
            resample=d.resample,
            epoch_samples=d.epoch_samples,
            shuffle_buffer=d.shuffle_buffer,
        )


def corpus_hygiene(cfg: DictConfig) -> Hygiene:
    """What the corpus route keeps: ``data.min_side`` (null: the crop size),
    ``data.small_images`` and ``data.dedupe``."""
    d = cfg.data
    min_side = d.min_side if d.min_side is not None else d.crop_size
    return Hygiene(min_side=min_side, small=d.small_images, dedupe=d.dedupe)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    modules = {"shards": ShardDataModule, "corpus": CorpusDataModule}
    return modules.get(cfg.data.source, PhotoDataModule)(cfg)
