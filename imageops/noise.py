"""Counter-based noise: values that are a pure function of a per-sample seed and a position.

A torch RNG gives different values on different devices and needs one generator per sample
to make a sample's noise independent of its batch mates. Hashing (seed, y, x) instead is
batched, the same on every device, and replayable from the integer seed stored in the
parameters. The simulator's content grain (``data_sim.noise``) and the training step's
instance noise (``pixperfect.losses.randomness``) are built on it.
"""

from __future__ import annotations

import math

import torch

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
