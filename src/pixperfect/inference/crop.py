"""Where to refine: the edit mask binarised, the crop around it, and the paste-back weights.

The refiner only ever sees a crop around the mask's bounding box (plus a context margin), so
the cost of refining follows the size of the edit, not the size of the photo. What it
returns is pasted back only inside the mask grown by a narrow band (a hard paste-back's
seam lies within a few px outside the mask), with a soft feather; everything else keeps
the input's exact pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

MASK_THRESHOLD = 0.5  # mask pixels at or above half of full scale are "edited"


def binarize_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W) bool from a mask of any kind: bool, 8/16-bit integer or float in [0, 1];
    grey, RGB or RGBA ((H, W, C); the mean of the colour channels counts, alpha is ignored)
    or a tensor (H, W), (1, H, W). A pixel is edited when it is at or above
    :data:`MASK_THRESHOLD` of full scale. Integer masks are compared in integers, so a
    large mask is never converted to float as a whole."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu()
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.ndim != 2:
            raise ValueError(f"a mask tensor must be (H, W) or (1, H, W), got {tuple(mask.shape)}")
        if mask.is_floating_point():
            return (mask >= MASK_THRESHOLD).numpy()
        mask = mask.numpy()  # bool or 8/16-bit integers: as an array below
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., :3] if mask.shape[2] >= 3 else mask[..., :1]
    if mask.ndim not in (2, 3):
        raise ValueError(f"a mask must be (H, W) or (H, W, C), got shape {mask.shape}")
    channels = 1 if mask.ndim == 2 else mask.shape[2]
    if mask.dtype == bool:
        return mask if mask.ndim == 2 else mask.any(axis=2)
    if mask.dtype.kind == "f":
        grey = mask if mask.ndim == 2 else mask.mean(axis=2)
        return grey >= MASK_THRESHOLD
    if mask.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported mask sample type {mask.dtype}; use 8 or 16 bits")
    top = 65535 if mask.dtype == np.uint16 else 255
    # mean / top >= 0.5  <=>  2 * sum >= channels * top, exactly in integers.
    if mask.ndim == 2:
        return mask >= (top + 1) // 2
    return 2 * mask.sum(axis=2, dtype=np.uint32) >= channels * top


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle: rows ``top:bottom``, columns ``left:right``."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


def mask_box(mask: np.ndarray) -> Box | None:
    """The bounding box of the True pixels of an (H, W) bool mask; None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def _grow(lo: int, hi: int, margin: int, size: int, stride: int) -> tuple[int, int]:
    lo, hi = max(0, lo - margin), min(size, hi + margin)
    # Round the side up to the network stride with real pixels where the image has them
    # (reflection padding is only the fallback for images smaller than one stride step).
    want = min(size, math.ceil((hi - lo) / stride) * stride)
    hi = min(size, lo + want)
    lo = max(0, hi - want)
    return lo, hi


def expand_box(box: Box, margin: int, height: int, width: int, stride: int = 1) -> Box:
    """``box`` grown by ``margin`` on every side, clipped to the (height, width) image and
    grown further to a multiple of ``stride`` where the image allows."""
    top, bottom = _grow(box.top, box.bottom, margin, height, stride)
    left, right = _grow(box.left, box.right, margin, width, stride)
    return Box(top, left, bottom, right)


def paste_weights(mask: np.ndarray, band: int, feather: int) -> np.ndarray:
    """(H, W) float32 paste-back weights for an (H, W) bool mask: 1 inside the mask and up to
    ``band`` px (Euclidean) outside it, a cosine falloff to 0 over the next ``feather`` px,
    exactly 0 beyond. An all-False mask gives all zeros."""
    if band < 0 or feather < 0:
        raise ValueError(f"band={band} and feather={feather} must be >= 0")
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    # Distance of every pixel to the nearest mask pixel (0 inside the mask).
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if feather == 0:
        return (distance <= band).astype(np.float32)
    t = np.clip((distance - band) / feather, 0.0, 1.0)
    weights = (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)
    weights[distance >= band + feather] = 0.0
    return weights
