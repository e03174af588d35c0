"""Counter-based noise: values that are a pure function of a per-sample seed and a position.

A torch RNG gives different values on different devices and needs one generator per sample
to make a sample's noise independent of its batch mates. Hashing (seed, y, x) instead is
batched, the same on every device, and replayable from the integer seed stored in the
parameters. The content family's grain uses it here; the training step's instance noise
(``pixperfect.losses.randomness``) uses :func:`hash32` too.
"""

from __future__ import annotations

import math

import torch

from data_sim.blur import gaussian_blur2d

_MASK32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Integer mixing (a 32-bit bijection) of int64 values holding 32-bit words. The
    multipliers are < 2**31, so no product overflows int64. Returns a new tensor; the steps
    after the first run in place (this is memory-bound)."""
    x = x & _MASK32
    x ^= x >> 16
    x.mul_(0x7FEB352D).bitwise_and_(_MASK32)
    x ^= x >> 15
    x.mul_(0x2C1B3C6D).bitwise_and_(_MASK32)
    x ^= x >> 16
    return x


def hash_noise(seed: torch.Tensor, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Standard-normal noise ``(B, 1, H, W)`` that is a pure function of (seed, y, x), from
    two hashed words per pixel and a Box-Muller transform."""
    seed = seed.to(device=device, dtype=torch.int64).view(-1, 1, 1)
    ys = torch.arange(height, device=device, dtype=torch.int64).view(1, -1, 1)
    xs = torch.arange(width, device=device, dtype=torch.int64).view(1, 1, -1)
    base = hash32(hash32(seed) + ys * 0x01000193) + xs * 0x27D4EB2F
    base = base.mul_(2)
    u1 = hash32(base + 1).to(torch.float32).add_(0.5).div_(4294967296.0)  # (0, 1): log finite
    u2 = hash32(base.add_(2)).to(torch.float32).mul_(2.0 * math.pi / 4294967296.0)
    z = u1.log_().mul_(-2.0).sqrt_().mul_(u2.cos_())  # Box-Muller
    return z.unsqueeze(1)


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
