"""The colour family's jitter: a per-sample affine colour matrix, gamma and white balance."""

import torch

from data_sim.colour import LUMA, jitter_colours
from data_sim.fields import FieldConfig, render_field, sample_field_params


def _params(n: int, **values: float) -> dict[str, torch.Tensor]:
    neutral = {"brightness": 0.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "gamma": 1.0}
    neutral.update(values)
    params = {k: torch.full((n,), float(v)) for k, v in neutral.items()}
    params["white_balance"] = torch.ones(n, 3)
    return params


def test_neutral_jitter_leaves_the_image_unchanged(photo):
    x = photo[None]
    assert torch.allclose(jitter_colours(x, _params(1)), x, atol=1e-5)


def test_hue_and_saturation_keep_grey_pixels_grey():
    grey = torch.linspace(0.1, 0.9, 64).view(1, 1, 8, 8).expand(2, 3, 8, 8).contiguous()
    out = jitter_colours(grey, _params(2, hue=0.2, saturation=1.4))
    assert torch.allclose(out, grey, atol=1e-5)


def test_zero_saturation_gives_the_luma_on_every_channel(photo):
    x = photo[None]
    out = jitter_colours(x, _params(1, saturation=0.0))
    luma = torch.einsum("c,bchw->bhw", LUMA, x)
    for channel in range(3):
        assert torch.allclose(out[:, channel], luma.clamp(0, 1), atol=1e-4)


def test_hue_rotation_changes_colour_but_keeps_luma(photo):
    x = photo[None] * 0.8 + 0.1  # away from the clamp
    out = jitter_colours(x, _params(1, hue=0.1))
    luma = lambda t: torch.einsum("c,bchw->bhw", LUMA, t)  # noqa: E731
    assert (out - x).abs().mean() > 0.02
    assert torch.allclose(luma(out), luma(x), atol=0.02)


def test_contrast_pivots_on_the_mean_luma():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    out = jitter_colours(x, _params(1, contrast=1.5))
    assert out.std() > x.std() * 1.3
    assert abs(float(out.mean() - x.mean())) < 0.01


def test_field_rendered_on_a_coarse_grid_matches_the_full_render():
    params = sample_field_params(4, 96, 128, FieldConfig(), torch.Generator().manual_seed(1))
    full = render_field(params, 96, 128, torch.device("cpu"))
    coarse = render_field(params, 96, 128, torch.device("cpu"), step=4)
    assert coarse.shape == full.shape
    assert (coarse - full).abs().max() < 0.03
