"""Non-uniform colour shift (METHOD 5.1): the tone and colour drift of a VAE-decoded region.

The whole image is colour-jittered per sample (brightness, contrast, saturation, hue, gamma,
white balance, all with kornia on the device) and blended with the original through a smooth
random field, so the shift varies across the region; the simulator uses the result inside
the compositing alpha only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import kornia
import torch

from data_sim.fields import FieldConfig, render_field, sample_field_params
from data_sim.sampling import bernoulli, check_range, uniform


@dataclass
class ColourShiftConfig:
    p: float = 0.8
    brightness: tuple[float, float] = (-0.08, 0.08)  # additive
    contrast: tuple[float, float] = (0.85, 1.15)  # multiplicative around the mean
    saturation: tuple[float, float] = (0.75, 1.3)
    hue: tuple[float, float] = (-0.04, 0.04)  # fraction of a full turn
    gamma: tuple[float, float] = (0.8, 1.25)
    white_balance: tuple[float, float] = (0.9, 1.1)  # per-channel gain
    field: FieldConfig = field(default_factory=FieldConfig)

    def validate(self) -> None:
        check_range("sim.colour.p", (self.p, self.p), 0, 1)
        check_range("sim.colour.brightness", self.brightness, -1, 1)
        check_range("sim.colour.contrast", self.contrast, 0, 10)
        check_range("sim.colour.saturation", self.saturation, 0, 10)
        check_range("sim.colour.hue", self.hue, -0.5, 0.5)
        check_range("sim.colour.gamma", self.gamma, 1e-2, 10)
        check_range("sim.colour.white_balance", self.white_balance, 1e-2, 10)
        self.field.validate("sim.colour.field")


def sample_colour_params(
    batch_size: int, height: int, width: int, cfg: ColourShiftConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    b = batch_size
    return {
        "applied": bernoulli(generator, b, cfg.p),
        "brightness": uniform(generator, b, *cfg.brightness),
        "contrast": uniform(generator, b, *cfg.contrast),
        "saturation": uniform(generator, b, *cfg.saturation),
        "hue": uniform(generator, b, *cfg.hue),
        "gamma": uniform(generator, b, *cfg.gamma),
        "white_balance": uniform(generator, b, *cfg.white_balance, 3),
        **{
            f"field_{k}": v
            for k, v in sample_field_params(b, height, width, cfg.field, generator).items()
        },
    }


def jitter_colours(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The whole image with each sample's colour jitter applied (B, 3, H, W) in [0, 1]."""
    p = {k: v.to(images.device) for k, v in params.items()}
    x = kornia.enhance.adjust_brightness(images, p["brightness"])
    x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, p["contrast"])
    x = kornia.enhance.adjust_saturation(x, p["saturation"])
    x = kornia.enhance.adjust_hue(x, p["hue"] * 2 * math.pi)
    x = kornia.enhance.adjust_gamma(x.clamp(0, 1), p["gamma"])
    x = x * p["white_balance"][..., None, None]
    return x.clamp(0, 1)


def apply_colour_shift(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Images with a spatially varying colour shift; samples not ``applied`` are returned
    unchanged."""
    _, _, h, w = images.shape
    weight = render_field(
        {k[len("field_") :]: v for k, v in params.items() if k.startswith("field_")},
        h,
        w,
        images.device,
    )
    shifted = images + weight * (jitter_colours(images, params) - images)
    applied = params["applied"].to(images.device)[:, None, None, None]
    return torch.where(applied, shifted, images)
