"""Training crops: at the native scale by default, at a random scale when asked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixperfect.config import ConfigError
from pixperfect.data.crops import random_crop


def _photo() -> torch.Tensor:
    """Fine grain on a smooth ramp: downscaling visibly lowers the grain's energy."""
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 256).expand(3, 256, 256)
    return (0.5 * ramp + 0.3 * torch.rand(3, 256, 256, generator=gen)).clamp(0, 1)


def test_the_default_scale_draws_exactly_the_crops_it_drew_before():
    from pixperfect.data.crops import random_crop_with_origin

    photo = _photo()
    a = random_crop(photo, 64, torch.Generator().manual_seed(3))
    b = random_crop_with_origin(photo, 64, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_a_crop_at_half_scale_is_a_downscaled_region_twice_the_size():
    photo = _photo()
    crop = random_crop(photo, 64, torch.Generator().manual_seed(1), scale=(0.5, 0.5))
    assert crop.shape == (3, 64, 64)
    native = random_crop(photo, 64, torch.Generator().manual_seed(1))
    grain = lambda x: (x - F.avg_pool2d(x[None], 3, 1, 1)[0]).square().mean()  # noqa: E731
    # Area downscaling averages 2x2 pixels of independent grain: about half its energy.
    assert grain(crop) < 0.7 * grain(native)
    # Every crop pixel is the mean of a 2x2 block of the photo somewhere.
    blocks = F.avg_pool2d(photo[None], 2, 1)[0]
    hits = (blocks - crop[:, :1, :1]).abs().sum(0) < 1e-6
    assert hits.any()


def test_a_scale_outside_zero_to_one_is_refused_naming_the_key(tiny_config):
    with pytest.raises(ConfigError, match="data.crop_scale"):
        tiny_config("data.crop_scale=[0.5,1.5]")
