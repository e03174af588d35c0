"""The artifact-family contract (data_sim.family), checked on every family the simulator
runs, and the shared morphology (imageops.morphology)."""

from dataclasses import fields

import numpy as np
import pytest
import torch
from scipy import ndimage

from data_sim.simulator import FAMILIES, FAMILY_TYPES, ArtifactSimulator, SimConfig
from imageops.morphology import dilate, erode, grow_distance, squared_distance

B, H, W = 6, 40, 56


def _half_applied_cfg() -> SimConfig:
    cfg = SimConfig()
    for kind in FAMILY_TYPES:
        getattr(cfg, kind.key).p = 0.5  # some samples applied, some untouched
    return cfg


def _drawn(seed: int = 0):
    """Images, an edit mask and every family's parameters, as the simulator draws them."""
    sim = ArtifactSimulator(_half_applied_cfg())
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(B, 3, H, W, generator=g)
    params = sim.sample_params(B, H, W, g)
    mask = torch.zeros(B, 1, H, W)
    mask[..., 8:30, 10:40] = 1
    return sim, images, params, mask


def test_every_family_has_a_config_section_and_its_own_key():
    keys = [kind.key for kind in FAMILY_TYPES]
    assert len(set(keys)) == len(keys)
    assert set(keys) <= {f.name for f in fields(SimConfig)}


@pytest.mark.parametrize("kind", FAMILY_TYPES, ids=lambda k: k.key)
def test_a_family_leaves_unapplied_samples_alone_and_in_place_matches_the_copy(kind):
    sim, images, params, mask = _drawn()
    family = next(f for f in sim.families if f.key == kind.key)
    p = params[kind.key]
    applied = p["applied"]
    assert applied.any() and not applied.all()
    before = images.clone()
    for side in (
        lambda x, **kw: family.apply(x, p, mask, **kw),
        lambda x, **kw: family.outside(x, p, **kw),
    ):
        copied = side(images)
        assert torch.equal(images, before), "changed its input without inplace"
        assert torch.equal(copied[~applied], images[~applied])
        owned = images.clone()
        result = side(owned, inplace=True)
        assert result is owned and torch.equal(result, copied)


@pytest.mark.parametrize("kind", FAMILY_TYPES, ids=lambda k: k.key)
def test_a_family_describes_and_labels_its_samples_from_the_parameters_alone(kind):
    _, _, params, _ = _drawn()
    p = params[kind.key]
    for i in range(B):
        labels = kind.labels(p, i)
        assert set(labels) <= set(FAMILIES), "every label needs its place in FAMILIES"
        assert bool(labels) == bool(p["applied"][i])
        assert isinstance(kind.describe(p, i), str) and kind.describe(p, i)


def test_every_label_the_families_can_report_has_a_place_in_families():
    cfg = SimConfig()
    for kind in FAMILY_TYPES:
        getattr(cfg, kind.key).p = 1.0
    cfg.texture.vae.kind, cfg.texture.vae.p = "taesd", 1.0  # labels only: no codec is loaded
    sim = ArtifactSimulator(cfg)
    params = sim.sample_params(4, H, W, torch.Generator().manual_seed(0))
    reported = {label for kind in FAMILY_TYPES for label in kind.labels(params[kind.key], 0)}
    assert reported == set(FAMILIES)


def _blobs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(3, 1, 30, 45, generator=g) > 0.97
    return dilate(seeds, 2)


def test_square_dilation_and_erosion_match_scipy_and_keep_masks_at_the_border():
    mask = _blobs()
    mask[0, 0, :, :6] = True  # touches the left border
    for r in (0, 1, 3):
        s = np.ones((2 * r + 1, 2 * r + 1), bool)
        for i, m in enumerate(mask[:, 0].numpy()):
            assert np.array_equal(dilate(mask, r)[i, 0].numpy(), ndimage.binary_dilation(m, s))
            want = ndimage.binary_erosion(m, s, border_value=1)
            assert np.array_equal(erode(mask, r)[i, 0].numpy(), want)
    assert erode(mask, 2)[0, 0, 10:20, 0].all(), "the border does not erode the mask"


def test_squared_distance_is_exact_within_its_reach():
    mask = _blobs(1)
    reach = 6
    d2 = squared_distance(mask, reach).long()
    for i, m in enumerate(mask[:, 0].numpy()):
        exact = ndimage.distance_transform_edt(~m) ** 2
        near = exact <= reach * reach
        assert np.array_equal(d2[i, 0].numpy()[near], exact[near].round().astype(np.int64))
        assert (d2[i, 0].numpy()[~near] > reach * reach).all()


def test_grow_distance_counts_the_steps_of_an_octagonal_growth():
    mask = torch.zeros(1, 1, 21, 21)
    mask[..., 10, 10] = 1
    d = grow_distance(mask, 8)
    assert d[0, 0, 10, 10] == 0 and d[0, 0, 10, 13] == 3  # along an axis: one per step
    assert d[0, 0, 13, 13] == 4  # (3, 3) away, 4.24 px: within ~8% of Euclidean
    assert d.max() == 9  # capped at max_steps + 1
