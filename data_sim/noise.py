"""Film grain for the content family: hashed noise (:mod:`imageops.noise`, a pure function
of a per-sample seed and a position, the same on every device) blurred per sample and tiled.
"""

from __future__ import annotations

import math

import torch

from data_sim.blur import gaussian_blur2d
from imageops.noise import hash_noise

# Grain is synthesised on a periodic tile and repeated: the int64 hash at full resolution
# would dominate the content family's CPU cost, and a 128 px period is invisible in a
# low-amplitude grain.
_GRAIN_TILE = 128
# Grain blur is capped so one fixed kernel size serves every sample: a sample's output then
# does not depend on which other samples share its batch.
_GRAIN_MAX_SIGMA = 2.0
_GRAIN_KSIZE = 2 * math.ceil(3 * _GRAIN_MAX_SIGMA) + 1


def grain(
    seed: torch.Tensor, sigma: torch.Tensor, height: int, width: int, dtype: torch.dtype
) -> torch.Tensor:
    """Unit-std grain ``(B, 1, H, W)`` on ``seed``'s device: hash noise blurred by per-sample
    ``sigma`` (clipped to 2 px), tiled."""
    device = seed.device
    tile = hash_noise(seed, _GRAIN_TILE, _GRAIN_TILE, device).to(dtype)
    sigma = sigma.to(dtype).clamp(1e-3, _GRAIN_MAX_SIGMA)
    ksize = _GRAIN_KSIZE
    # Circular border keeps the tile periodic, so the repeats join without seams.
    tile = gaussian_blur2d(tile, ksize, sigma.view(-1, 1).expand(-1, 2), border_type="circular")
    # Blurring white noise scales its std by the kernel's L2 norm, sum(k1d**2) for a separable
    # kernel; divide it out so the grain has unit std whatever sigma is.
    taps = torch.arange(ksize, device=device, dtype=dtype) - ksize // 2
    k1d = torch.exp(-(taps**2) / (2.0 * sigma.view(-1, 1) ** 2))
    k1d = k1d / k1d.sum(dim=1, keepdim=True)
    tile = tile / (k1d**2).sum(dim=1).view(-1, 1, 1, 1)
    reps = (1, 1, -(-height // _GRAIN_TILE), -(-width // _GRAIN_TILE))
    return tile.repeat(*reps)[..., :height, :width]
