"""Photo sources: the colour photos scikit-image ships (the offline default) and folders.

Every loader returns float32 tensors (3, H, W) in [0, 1], whatever the file held
(greyscale, RGBA, 8 or 16 bits); unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pixperfect.errors import ConfigError, InputError, MissingFileError
from pixperfect.imageio import read_image, to_rgb_float

log = logging.getLogger(__name__)

# Colour photographs bundled inside scikit-image's wheel (no download needed).
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
    "retina",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def load_skimage_photo(name: str) -> torch.Tensor:
    from skimage import data

    if name not in SKIMAGE_PHOTOS:
        raise InputError(
            f"unknown scikit-image photo {name!r}; available: {', '.join(SKIMAGE_PHOTOS)}"
        )
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
        image = image[0]
    return to_rgb_float(np.asarray(image))


def skimage_split(holdout: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(train, held-out) photos by name; held-out names never appear in train."""
    unknown = [n for n in holdout if n not in SKIMAGE_PHOTOS]
    if unknown:
        raise ConfigError(
            f"data.holdout names unknown photos {unknown}; choose from {', '.join(SKIMAGE_PHOTOS)}"
        )
    train = {n: load_skimage_photo(n) for n in SKIMAGE_PHOTOS if n not in holdout}
    held = {n: load_skimage_photo(n) for n in holdout}
    return train, held


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingFileError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}"
        )
    return files


def load_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every readable image under ``folder`` by relative path; unreadable ones are skipped
    and listed in a warning."""
    images, skipped = {}, []
    root = Path(folder)
    for path in list_images(root):
        try:
            images[str(path.relative_to(root))] = to_rgb_float(read_image(path).pixels)
        except (OSError, ValueError) as e:
            skipped.append(f"{path} ({e})")
    if skipped:
        log.warning("skipped %d unreadable image(s):\n  %s", len(skipped), "\n  ".join(skipped))
    if not images:
        raise MissingFileError(f"none of the images under {root} could be read")
    return images


def load_photos(cfg: DictConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(train, held-out) photos named by the config."""
    if cfg.data.source == "skimage":
        return skimage_split(list(cfg.data.holdout))
    if cfg.data.source == "shards":  # training data is in the shards
        return {}, heldout_photos(cfg)
    train = load_folder(cfg.data.images)
    held = load_folder(cfg.data.val_images) if cfg.data.val_images else {}
    return train, held


def heldout_photos(cfg: DictConfig) -> dict[str, torch.Tensor]:
    if cfg.data.val_images:
        return load_folder(cfg.data.val_images)
    if cfg.data.source == "skimage" or (
        cfg.data.source in ("shards", "corpus") and cfg.data.holdout
    ):
        return skimage_split(list(cfg.data.holdout))[1]
    return {}
