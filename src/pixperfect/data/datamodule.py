"""LightningDataModule over photos: an endless stream of random clean crops for training
(artifacts are simulated on the device inside the training step) and a fixed held-out set
of artifact triples for validation.

Batches are dicts. Training: ``{"target"}``; validation: ``{"target", "composite", "mask",
"alpha"}``. The module simulates whatever is missing, so it does not care which produced a
batch.
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
from pixperfect.data.crops import heldout_triples, random_crop
from pixperfect.data.photos import load_folder, skimage_split

log = logging.getLogger(__name__)


def load_photos(cfg: DictConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(train, held-out) photos named by the config."""
    if cfg.data.source == "skimage":
        return skimage_split(list(cfg.data.holdout))
    train = load_folder(cfg.data.images)
    held = load_folder(cfg.data.val_images) if cfg.data.val_images else {}
    return train, held


class RandomCropStream(IterableDataset):
    """Endless random crops; each (seed, start step, rank, worker) gets its own stream."""

    def __init__(self, images: list[torch.Tensor], crop_size: int, seed: int) -> None:
        if not images:
            raise ValueError("no training images")
        self.images, self.crop_size, self.seed = images, crop_size, seed

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info else 0
        generator = torch.Generator().manual_seed(derive_seed(self.seed, worker))
        while True:
            index = int(torch.randint(len(self.images), (1,), generator=generator))
            yield {"target": random_crop(self.images[index], self.crop_size, generator)}


class ListDataset(Dataset):
    def __init__(self, samples: list[dict]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


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
        d = self.cfg.data
        log.info("training photos: %d, held-out photos: %d", len(self.train_images), len(held))
        if held:
            self.val_samples = heldout_triples(
                held,
                ArtifactSimulator(sim_config(self.cfg)),
                d.val_samples_per_image,
                d.val_seed,
                crop_size=d.val_crop_size,
            )

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        # A resumed run must not replay the crops it already saw: fold in the restored step.
        step = self.trainer.global_step if self.trainer else 0
        rank = self.trainer.global_rank if self.trainer else 0
        seed = derive_seed(self.cfg.run.seed, step, rank)
        stream = RandomCropStream(list(self.train_images.values()), d.crop_size, seed)
        return DataLoader(
            stream,
            batch_size=d.batch_size,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ListDataset(self.val_samples), batch_size=self.cfg.data.batch_size)
