"""Small functions that several test files share, one copy each: reading logged steps, writing
a test image, PSNR, square masks, a free port, a shard folder's manifest, and where a refine
changed pixels. Fixtures and the tiny recipe stay in conftest.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixperfect.imageio import Image, write_image


def logged_steps(event_file: Path, tag: str = "train/loss") -> list[int]:
    """The steps at which ``tag`` was logged in one TensorBoard event file."""
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def write_pixels(path: Path, pixels: np.ndarray) -> Path:
    """Write uint8 pixels ((H, W) or (H, W, C)) as the image file ``path``; returns ``path``."""
    write_image(path, Image(pixels))
    return path


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1], computed in float64."""
    return float(10 * torch.log10(1.0 / torch.mean((a.double() - b.double()) ** 2)))


def square_mask(batch: int = 1, size: int = 32, lo: int = 8, hi: int = 24) -> torch.Tensor:
    """(batch, 1, size, size) float mask, 1 on the square [lo, hi) x [lo, hi), 0 elsewhere."""
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, lo:hi, lo:hi] = 1
    return mask


def square_mask_image(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    """(h, w) uint8 mask image, 255 on the size x size square at (top, left), 0 elsewhere."""
    mask = np.zeros((h, w), np.uint8)
    mask[top : top + size, left : left + size] = 255
    return mask


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manifest_of(folder: Path) -> dict:
    """The parsed manifest.json of a shard folder."""
    return json.loads((folder / "manifest.json").read_text())


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest mask pixel (0 inside the mask)."""
    import cv2

    return cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def changed_pixels(out: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(H, W) bool: where ``out`` differs from ``pixels`` in any channel."""
    diff = out != pixels
    return diff if diff.ndim == 2 else diff.any(axis=-1)


def seeded(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)
