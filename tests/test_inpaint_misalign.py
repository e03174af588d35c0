"""Tests for data_sim.fill (push-pull fill), data_sim.content and data_sim.misalign."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from data_sim.content import (
    ContentDiscontinuityConfig,
    apply_content_discontinuity,
    sample_content_params,
)
from data_sim.fill import diffusion_fill, fill, push_pull_fill
from data_sim.misalign import (
    MisalignConfig,
    apply_misalignment,
    mask_centre,
    sample_misalign_params,
)
from imageops.morphology import widen_mask


def _photo(size: int = 64, n: int = 3) -> torch.Tensor:
    """n different size x size crops of skimage's astronaut (ships with skimage, offline)."""
    return _photo_cached(size, n).clone()


@functools.lru_cache(maxsize=4)
def _photo_cached(size: int, n: int) -> torch.Tensor:
    skdata = pytest.importorskip("skimage.data")
    skt = pytest.importorskip("skimage.transform")
    img = skt.resize(skdata.astronaut(), (256, 256), anti_aliasing=True).astype(np.float32)
    crops = [
        img[40 + 50 * i : 40 + 50 * i + size, 60 + 40 * i : 60 + 40 * i + size] for i in range(n)
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def _box_mask(b: int, h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(b, 1, h, w)
    m[..., y0:y1, x0:x1] = 1.0
    return m


def _disc_mask(b: int, h: int, w: int, cy: float, cx: float, r: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return (((ys - cy) ** 2 + (xs - cx) ** 2) <= r * r).float().expand(b, 1, h, w).clone()


def _misalign_params(b: int, **over: torch.Tensor) -> dict[str, torch.Tensor]:
    p = {
        "applied": torch.ones(b, dtype=torch.bool),
        "shift": torch.zeros(b, 2),
        "angle": torch.zeros(b),
        "scale": torch.ones(b),
        "warp": torch.zeros(b, 2, 4, 4),
    }
    p.update(over)
    return p


# ------------------------------------------------------------------------------- fill


@pytest.mark.parametrize("method", ["push_pull", "diffusion"])
def test_fill_keeps_known_pixels_exact_and_fills_hole_within_range(method: str) -> None:
    x = _photo()
    hole = _disc_mask(3, 64, 64, 30, 34, 14)
    out = fill(x, hole, method=method)
    known = hole.expand_as(x) == 0
    assert torch.equal(out[known], x[known])
    inside = out[~known]
    assert torch.isfinite(inside).all()
    assert inside.min() >= 0.0 and inside.max() <= 1.0


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (1, 7), (2, 3)])
def test_fill_of_constant_image_is_that_constant_for_any_size(shape: tuple[int, int]) -> None:
    h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.full((2, 3, h, w), 0.37)
    hole = (torch.rand(2, 1, h, w, generator=g) < 0.6).float()
    hole[..., 0, 0] = 0.0  # at least one known pixel per sample
    torch.testing.assert_close(push_pull_fill(x, hole), x, atol=1e-5, rtol=0)


def test_fill_of_linear_ramp_with_interior_hole_stays_close_to_ramp() -> None:
    h, w = 64, 64
    ramp = (torch.arange(w).float() / (w - 1)).view(1, 1, 1, w).expand(1, 3, h, w).clone()
    hole = _box_mask(1, h, w, 20, 44, 22, 42)
    assert (push_pull_fill(ramp, hole) - ramp).abs().max() < 0.05
    # Harmonic refinement reproduces a linear ramp almost exactly.
    assert (diffusion_fill(ramp, hole) - ramp).abs().max() < 0.01


def test_fill_handles_holes_touching_the_border() -> None:
    x = _photo()
    hole = _box_mask(3, 64, 64, 0, 30, 40, 64)  # top-right corner, two image edges
    out = push_pull_fill(x, hole)
    assert torch.isfinite(out).all()
    known = hole.expand_as(x) == 0
    assert torch.equal(out[known], x[known])
    # Filled values come from the neighbourhood: within the known pixels' range per channel.
    for c in range(3):
        ref = x[:, c][known[:, c]]
        assert out[:, c].min() >= ref.min() - 1e-6 and out[:, c].max() <= ref.max() + 1e-6


def test_fill_of_full_image_hole_is_grey_without_nan() -> None:
    x = _photo(n=2)
    hole = torch.ones(2, 1, 64, 64)
    hole[1, :, 5:9, 5:9] = 0.0  # second sample has a few known pixels, first has none
    out = push_pull_fill(x, hole)
    assert torch.isfinite(out).all()
    assert torch.all(out[0] == 0.5)
    assert torch.equal(out[1, :, 5:9, 5:9], x[1, :, 5:9, 5:9])


def test_fill_on_odd_sized_image_is_smooth_and_exact_outside() -> None:
    x = _photo()[:, :, :37, :53]
    hole = _box_mask(3, 37, 53, 10, 25, 15, 40)
    out = push_pull_fill(x, hole)
    assert out.shape == x.shape
    assert torch.equal(out[hole.expand_as(x) == 0], x[hole.expand_as(x) == 0])
    # Smooth inside the hole (2 px in from its edge): neighbouring differences far below the
    # photo's own (max ~0.4, mean ~0.04 on this crop).
    inner = out[:, :, 12:23, 17:38].diff(dim=-1).abs()
    assert inner.max() < 0.1 and inner.mean() < 0.02


def test_fill_batched_equals_each_sample_alone() -> None:
    x = _photo()
    hole = torch.cat(
        [
            _disc_mask(1, 64, 64, 20, 20, 10),
            _box_mask(1, 64, 64, 0, 64, 30, 64),
            _disc_mask(1, 64, 64, 40, 50, 25),
        ]
    )
    batched = push_pull_fill(x, hole)
    for i in range(3):
        assert torch.equal(batched[i : i + 1], push_pull_fill(x[i : i + 1], hole[i : i + 1]))


def test_widen_mask_grows_each_sample_by_its_own_radius() -> None:
    m = _box_mask(2, 40, 40, 20, 21, 20, 21)  # single pixel
    wide = widen_mask(m, torch.tensor([2.0, 5.0]), max_radius=8)
    rows = wide[:, 0, 20]  # horizontal extent through the seed pixel
    assert rows[0].sum() == 5 and rows[1].sum() == 11
    assert torch.all(wide >= m)


# --------------------------------------------------------------- content discontinuity


def _content_setup(seed: int = 0, p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = _photo()
    mask = _disc_mask(3, 64, 64, 32, 30, 12)
    params = sample_content_params(
        3, ContentDiscontinuityConfig(p=p), torch.Generator().manual_seed(seed)
    )
    return x, mask, params


def test_content_discontinuity_leaves_pixels_outside_mask_bit_exact() -> None:
    x, mask, params = _content_setup()
    out = apply_content_discontinuity(x, mask, params)
    outside = mask.expand_as(x) == 0
    assert torch.equal(out[outside], x[outside])


def test_content_discontinuity_changes_inside_of_mask_on_a_photo() -> None:
    x, mask, params = _content_setup()
    out = apply_content_discontinuity(x, mask, params)
    inside = mask.expand_as(x) == 1
    diff = (out - x).abs()[inside].view(3, -1)
    assert torch.all(diff.mean(dim=1) > 0.01)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_content_discontinuity_is_deterministic_for_a_seed() -> None:
    x, mask, p1 = _content_setup(seed=7)
    _, _, p2 = _content_setup(seed=7)
    assert torch.equal(
        apply_content_discontinuity(x, mask, p1), apply_content_discontinuity(x, mask, p2)
    )
    _, _, p3 = _content_setup(seed=8)
    assert not torch.equal(
        apply_content_discontinuity(x, mask, p1), apply_content_discontinuity(x, mask, p3)
    )


def test_content_discontinuity_batched_matches_each_sample_alone() -> None:
    x, mask, params = _content_setup(seed=3)
    batched = apply_content_discontinuity(x, mask, params)
    for i in range(3):
        single = {k: v[i : i + 1] for k, v in params.items()}
        alone = apply_content_discontinuity(x[i : i + 1], mask[i : i + 1], single)
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-6, rtol=0)


def test_content_discontinuity_returns_not_applied_samples_unchanged() -> None:
    x, mask, params = _content_setup()
    params["applied"] = torch.tensor([True, False, True])
    out = apply_content_discontinuity(x, mask, params)
    assert torch.equal(out[1], x[1])
    assert not torch.equal(out[0], x[0])
    params["applied"][:] = False
    assert torch.equal(apply_content_discontinuity(x, mask, params), x)


def test_content_discontinuity_band_keeps_deep_interior_original() -> None:
    x = _photo()
    mask = _disc_mask(3, 64, 64, 32, 32, 24)
    cfg = ContentDiscontinuityConfig(p=1.0, band_px=(6.0, 6.0), noise_std=(0.0, 0.0))
    out = apply_content_discontinuity(x, mask, sample_content_params(3, cfg, torch.Generator()))
    assert torch.equal(out[..., 26:38, 26:38], x[..., 26:38, 26:38])  # > 6 px from boundary
    assert not torch.equal(out[..., 32, 9:12], x[..., 32, 9:12])  # just inside the boundary


# ------------------------------------------------------------------------- misalignment


def test_misalignment_with_zero_parameters_returns_input() -> None:
    x = _photo()
    out = apply_misalignment(x, _misalign_params(3))
    torch.testing.assert_close(out[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def test_misalignment_integer_shift_moves_content_by_that_many_pixels() -> None:
    x = _photo()
    out = apply_misalignment(x, _misalign_params(3, shift=torch.tensor([[2.0, 0.0]] * 3)))
    torch.testing.assert_close(out[..., 4:-4, 6:-4], x[..., 4:-4, 4:-6], atol=1e-4, rtol=0)
    # A uniform smooth field of +2 px in y is the same as a shift of 2 px down.
    warp = torch.zeros(3, 2, 4, 4)
    warp[:, 1] = 2.0
    out = apply_misalignment(x, _misalign_params(3, warp=warp))
    torch.testing.assert_close(out[..., 6:-4, 4:-4], x[..., 4:-6, 4:-4], atol=1e-4, rtol=0)


def test_misalignment_rotates_and_scales_about_the_given_centre() -> None:
    x = torch.zeros(1, 1, 41, 61)
    x[..., 30, 10] = 1.0  # a dot at (x=10, y=30)
    mask = torch.zeros(1, 1, 41, 61)
    mask[..., 28:33, 8:13] = 1.0
    centre = mask_centre(mask)
    torch.testing.assert_close(centre, torch.tensor([[10 / 60, 30 / 40]]))
    params = _misalign_params(1, angle=torch.tensor([30.0]), scale=torch.tensor([1.5]))
    params["centre"] = centre
    out = apply_misalignment(x, params)
    assert out[0, 0, 30, 10] > 0.99  # the pivot does not move
    # Without the centre the pivot is the image centre, so the dot moves away.
    del params["centre"]
    assert apply_misalignment(x, params)[0, 0, 30, 10] < 0.01


def test_misalignment_is_deterministic_for_a_seed() -> None:
    x = _photo()
    cfg = MisalignConfig(p=1.0, warp_prob=1.0)
    p1 = sample_misalign_params(3, cfg, torch.Generator().manual_seed(3))
    p2 = sample_misalign_params(3, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(apply_misalignment(x, p1), apply_misalignment(x, p2))
    assert not torch.equal(apply_misalignment(x, p1), x)


def test_misalignment_returns_not_applied_samples_unchanged() -> None:
    x = _photo()
    cfg = MisalignConfig(p=1.0, warp_prob=1.0)
    params = sample_misalign_params(3, cfg, torch.Generator().manual_seed(0))
    params["applied"] = torch.tensor([False, True, False])
    out = apply_misalignment(x, params)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[1], x[1])


def test_misalignment_draws_different_parameters_per_sample() -> None:
    cfg = MisalignConfig(p=1.0, warp_prob=1.0)
    params = sample_misalign_params(8, cfg, torch.Generator().manual_seed(0))
    for key in ("shift", "angle", "scale", "warp"):
        v = params[key].reshape(8, -1)
        assert len({tuple(r.tolist()) for r in v}) == 8, key
    assert params["shift"].abs().max() <= cfg.max_shift_px
    assert params["angle"].abs().max() <= cfg.max_rotation_deg
    assert (params["scale"] - 1).abs().max() <= cfg.max_scale + 1e-6
    same = _photo(n=1).repeat(2, 1, 1, 1)
    p2 = sample_misalign_params(2, cfg, torch.Generator().manual_seed(1))
    out = apply_misalignment(same, p2)
    assert not torch.equal(out[0], out[1])  # same image, different warp


def test_misalignment_applied_probability_matches_config() -> None:
    params = sample_misalign_params(4000, MisalignConfig(p=0.3), torch.Generator().manual_seed(0))
    assert abs(params["applied"].float().mean().item() - 0.3) < 0.03
