"""Random draws of a training step that do not depend on how its batch is split over ranks.

Some loss terms draw random numbers per sample: the tone curves' betas and fitting pixels,
and instance noise on the discriminator's inputs. Under DDP each of ``world`` ranks holds
``B`` rows of a global batch of ``world * B``: rank ``r`` has rows ``r * B ... (r + 1) * B``
(the ranks' batches in rank order). Every rank seeds the step's generator identically, makes
each draw for the whole global batch, all draws in the same order, and keeps its own rows.
A sample's randomness then depends on its place in the global batch only, so the synced
gradients equal those of one process on the global batch. One process is ``rank=0, world=1``:
a draw for ``B`` rows, all kept. Every rank must have the same ``B`` (a shorter last batch on
one rank still gets valid draws, just not the single-process ones).

Small draws (betas, fitting-pixel uniforms) are simply made at the global shape and sliced.
Image-sized noise is not: the global draw would cost ``world`` times the local one on every
rank (32 x 3 x 512 x 512 float32, 100 MB a draw, for batch 2 on 16 GPUs). Instead the global
draw is one integer seed per sample, and each rank expands its own samples' seeds into noise
with :func:`hash_normal`, a counter-based hash: batched over the samples (a handful of
elementwise kernels, no per-sample generators or Python loop, no seeds copied to the host),
and the same noise on every device type (up to the rounding of log, cos and sin).
"""

from __future__ import annotations

import math

import torch

from imageops.noise import hash32


def rank_rows(local_batch: int, rank: int = 0, world: int = 1) -> slice:
    """The rows of a global batch of ``world * local_batch`` that belong to ``rank``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world; got rank={rank}, world={world}")
    return slice(rank * local_batch, (rank + 1) * local_batch)


def sample_seeds(
    local_batch: int,
    generator: torch.Generator | None = None,
    *,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(local_batch,) int64 seeds in [0, 2**32): ``rank``'s rows of one draw for the global
    batch, on the generator's device (or from the global RNG on ``device`` without one)."""
    rows = rank_rows(local_batch, rank, world)
    if generator is not None:
        device = generator.device
    seeds = torch.randint(
        0, 2**32, (world * local_batch,), generator=generator, device=device, dtype=torch.int64
    )
    return seeds[rows]


def hash_normal(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) float32 standard-normal noise on ``seeds``' device: sample ``b`` is a pure
    function of ``seeds[b]`` (and the shape), whatever the other samples.

    Element pairs ``i`` get two 32-bit words ``hash32(hash32(counter) ^ hash32(seed))`` and one
    Box-Muller transform (cos and sin halves). About 10x the cost of ``torch.randn``, all in
    memory-bound elementwise kernels: well under a millisecond a draw on a GPU at 512 px.
    """
    batch, n = seeds.shape[0], math.prod(shape)
    pairs = (n + 1) // 2
    device = seeds.device
    key = hash32(seeds.to(torch.int64)).view(batch, 1)
    counter = hash32(torch.arange(2 * pairs, device=device, dtype=torch.int64))
    words = hash32(counter.view(1, -1) ^ key)  # (B, 2 * pairs)
    u1 = words[:, :pairs].to(torch.float32).add_(0.5).div_(2.0**32)  # (0, 1]: log finite
    theta = words[:, pairs:].to(torch.float32).mul_(2 * math.pi / 2.0**32)
    radius = u1.log_().mul_(-2.0).sqrt_()
    noise = torch.cat([radius * theta.cos(), radius.mul_(theta.sin_())], dim=1)
    return noise[:, :n].reshape(batch, *shape)
