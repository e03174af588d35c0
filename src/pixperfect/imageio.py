"""Image files in and out, keeping what the user gave: size, mode (grey/RGB/RGBA) and bit
depth (8 or 16). OpenCV reads and writes 16-bit and alpha losslessly; we convert its BGR
order at the boundary so everything inside the project is RGB. Palette and CMYK files are
read as RGB and written back as RGB.

Writing keeps every pixel where the format can: PNG, TIFF and BMP are lossless, and WebP is
written in its lossless mode (OpenCV's default too; said here so it stays). JPEG cannot:
saving re-encodes the whole image. It is written with the least loss JPEG offers (quality
100, no chroma subsampling): pixels change by a few levels, where OpenCV's default (quality
95, 4:2:0) changes them by up to ~20 (:func:`is_lossy` tells callers, so they can say so)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pixperfect.errors import InputError, MissingFileError

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
_WRITE_PARAMS = {
    **dict.fromkeys(
        JPEG_SUFFIXES,
        [
            *(cv2.IMWRITE_JPEG_QUALITY, 100),
            *(cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        ],
    ),
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 101],  # above 100: lossless
}


def is_lossy(path: str | Path) -> bool:
    """Whether writing to ``path`` changes pixels (its format is JPEG)."""
    return Path(path).suffix.lower() in JPEG_SUFFIXES


@dataclass
class Image:
    pixels: np.ndarray  # (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; uint8 or uint16

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order image tools print."""
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else self.pixels.shape[2]


def read_image(path: str | Path) -> Image:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image {path} does not exist")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise InputError(f"{path} is not a readable image (PNG, JPEG, WebP, TIFF, BMP)")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: unsupported sample type {pixels.dtype}; use 8 or 16 bits")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, code)
    return Image(pixels)


def write_image(path: str | Path, image: Image) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = image.pixels
    if pixels.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
        pixels = cv2.cvtColor(pixels, code)
    if not cv2.imwrite(str(path), pixels, _WRITE_PARAMS.get(path.suffix.lower(), [])):
        raise InputError(f"could not write {path}: unsupported extension or folder not writable")


def max_value(pixels: np.ndarray) -> float:
    return 65535.0 if pixels.dtype == np.uint16 else 255.0


def to_rgb_float(pixels: np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from grey/RGB/RGBA, 8/16-bit or bool pixels; alpha is
    dropped (the refiner works on colour; callers that keep alpha hold on to it)."""
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.dtype.kind == "f":
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    else:
        x = torch.from_numpy(pixels.astype(np.float32) / max_value(pixels))
    if x.ndim == 2:
        x = x[..., None]
    x = x[..., :3] if x.shape[-1] >= 3 else x[..., :1].expand(-1, -1, 3)
    return x.permute(2, 0, 1).contiguous().clamp(0, 1)


def from_rgb_float(rgb: torch.Tensor, like: Image) -> Image:
    """Back to the mode and bit depth of ``like``: grey by luma, alpha copied from ``like``."""
    top = max_value(like.pixels)
    x = rgb.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    if like.channels == 1:
        x = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = np.round(x * top).astype(like.pixels.dtype)
    if like.channels == 4:
        out = np.concatenate([out, like.pixels[..., 3:]], axis=2)
    return Image(out)
