"""The loss terms' random draws do not depend on how a batch is split over ranks: each rank's
rows of a draw for the global batch are what one process draws for those rows
(pixperfect.losses.randomness). The end-to-end DDP check is tests/test_ddp_gradients.py."""

from __future__ import annotations

import pytest
import torch
from helpers import seeded

from pixperfect.losses import add_instance_noise, discriminative_tone_map, sample_betas
from pixperfect.losses.randomness import hash_normal, rank_rows, sample_seeds


def _split(fn, batch: int, world: int) -> list:
    """``fn(rows, rank, world)`` on each rank's rows, with a fresh same-seeded generator each."""
    share = batch // world
    return [fn(slice(r * share, (r + 1) * share), r, world) for r in range(world)]


def test_rank_rows_and_their_checks():
    assert rank_rows(3) == slice(0, 3)
    assert rank_rows(3, rank=2, world=4) == slice(6, 9)
    for rank, world in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="rank"):
            rank_rows(3, rank, world)


def test_betas_seeds_and_noise_of_the_ranks_are_the_single_process_draws():
    full = sample_betas(6, seeded(1))
    parts = _split(lambda _, r, w: sample_betas(2, seeded(1), rank=r, world=w), 6, 3)
    assert torch.equal(torch.cat(parts), full)
    seeds = sample_seeds(6, seeded(2))
    parts = _split(lambda _, r, w: sample_seeds(3, seeded(2), rank=r, world=w), 6, 2)
    assert torch.equal(torch.cat(parts), seeds)
    assert seeds.dtype == torch.int64 and 0 <= int(seeds.min()) and int(seeds.max()) < 2**32

    x = torch.rand(4, 3, 8, 8)
    noisy = add_instance_noise(x, 0.1, seeded(3))
    parts = _split(lambda s, r, w: add_instance_noise(x[s], 0.1, seeded(3), rank=r, world=w), 4, 2)
    assert torch.equal(torch.cat(parts), noisy)


def test_tone_maps_of_the_ranks_are_the_single_process_maps():
    g = seeded(4)
    pred = torch.rand(4, 3, 16, 16, generator=g)
    gt = (pred + 0.05 * torch.rand(4, 3, 16, 16, generator=g)).clamp(0, 1)
    mask = torch.zeros(4, 1, 16, 16)
    mask[..., 4:12, 2:10] = 1

    def tone_map(rows, rank, world):
        return discriminative_tone_map(
            pred[rows],
            gt[rows],
            mask[rows],
            seeded(5),
            samples_per_region=64,
            rank=rank,
            world=world,
        )

    full = tone_map(slice(None), 0, 1)
    for world in (2, 4):
        parts = _split(tone_map, 4, world)
        for i in range(2):
            assert torch.equal(torch.cat([p[i] for p in parts]), full[i])


def test_hash_normal_is_standard_normal_and_a_function_of_each_samples_seed():
    seeds = torch.tensor([0, 1, 2**32 - 1, 12345])
    z = hash_normal(seeds, (3, 64, 65))  # an odd element count
    assert z.shape == (4, 3, 64, 65) and z.dtype == torch.float32 and torch.isfinite(z).all()
    flat = z.flatten(1)
    assert flat.mean().abs() < 0.02 and (flat.std() - 1).abs() < 0.02
    corr = torch.corrcoef(flat)
    # neighbouring seeds, unrelated noise: within ~5 standard errors (1 / sqrt(12480)) of 0
    assert (corr - torch.eye(4)).abs().max() < 0.05
    assert torch.equal(hash_normal(seeds[2:3], (3, 64, 65))[0], z[2])  # alone or in a batch
    assert torch.equal(hash_normal(seeds, (3, 64, 65)), z)
