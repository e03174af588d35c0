"""Per-sample parameter draws on a CPU generator.

Every family draws its random parameters here, on the CPU, from an explicit
``torch.Generator``: the same seed gives the same parameters on any device, and the
drawn values can be stored next to a sample to explain or replay it.
"""

from __future__ import annotations

import hashlib

import torch

from data_sim.errors import SimConfigError


def uniform(
    generator: torch.Generator, n: int, low: float, high: float, *shape: int
) -> torch.Tensor:
    """``n`` (x ``shape``) values drawn uniformly from ``[low, high)`` as float32."""
    u = torch.rand((n, *shape), generator=generator, dtype=torch.float32)
    return low + (high - low) * u


def bernoulli(generator: torch.Generator, n: int, p: float) -> torch.Tensor:
    """``n`` booleans, each True with probability ``p``."""
    return torch.rand(n, generator=generator) < p


def randint(generator: torch.Generator, n: int, low: int, high: int) -> torch.Tensor:
    """``n`` integers drawn uniformly from ``[low, high]`` (both ends included)."""
    return torch.randint(low, high + 1, (n,), generator=generator)


def check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    """Refuse a ``(lo, hi)`` range that is reversed or leaves ``[low, high]``."""
    lo, hi = value
    if not (low <= lo <= hi <= high):
        raise SimConfigError(
            f"{name}={tuple(value)} is not a valid range: expected lo <= hi within [{low}, {high}]"
        )


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (base seed, step, rank, ...), stable across processes and
    Python versions, and far apart for neighbouring inputs."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (no host read, no copy). One place to
    make them, so a test running the simulation on a fake device can stand in for it."""
    return torch.Generator(device=device).manual_seed(seed)


def applied_indices(params: dict[str, torch.Tensor], key: str = "applied") -> torch.Tensor:
    """CPU indices of the samples whose bool ``params[key]`` is set (and that are applied):
    families gather just these, so their cost follows their probability."""
    flags = params[key].bool().cpu() & params["applied"].bool().cpu()
    return flags.nonzero().squeeze(1)
