"""Non-uniform colour shift (METHOD 5.1): the tone and colour drift of a VAE-decoded region.

The whole image is colour-jittered per sample (brightness, contrast, saturation and hue as
one affine colour matrix per sample, then gamma and white balance, batched on the device)
and blended with the original through a smooth random field, so the shift varies across
the region; the simulator uses the result inside the compositing alpha only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from data_sim.family import Family, Params, applied_output
from data_sim.fields import FieldConfig, render_field, sample_field_params
from data_sim.sampling import bernoulli, check_range, uniform

# The blend field is smooth (blobs >= 0.1 of the short side): rendered every 4th pixel and
# upsampled, it costs 1/16 of a full-resolution render.
FIELD_STEP = 4


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


# ITU-R BT.601 luma and the YIQ basis: hue turns about the grey axis as a rotation of (I, Q).
LUMA = torch.tensor([0.299, 0.587, 0.114])
YIQ_FROM_RGB = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
)
RGB_FROM_YIQ = torch.linalg.inv(YIQ_FROM_RGB)


def colour_matrix(
    params: dict[str, torch.Tensor], mean_luma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample affine map ``x -> M x + o`` (M: (B, 3, 3), o: (B, 3)) for brightness,
    contrast about the image's ``mean_luma`` (B,), saturation (a lerp towards luma) and hue.

    All four are linear in RGB, so they compose into one matrix: one pass over the pixels
    instead of four passes and two HSV round trips (the HSV route was most of the
    simulator's CPU time). Saturation and hue keep grey at grey, so the offset is grey too.
    """
    b = params["hue"].shape[0]
    eye = torch.eye(3).expand(b, 3, 3)
    s = params["saturation"].float().view(b, 1, 1)
    saturate = s * eye + (1 - s) * LUMA.view(1, 1, 3)  # each row: s x + (1 - s) luma(x)
    angle = params["hue"].float() * 2 * math.pi
    rotate = torch.zeros(b, 3, 3)
    rotate[:, 0, 0] = 1
    rotate[:, 1, 1], rotate[:, 1, 2] = angle.cos(), -angle.sin()
    rotate[:, 2, 1], rotate[:, 2, 2] = angle.sin(), angle.cos()
    hue = RGB_FROM_YIQ @ rotate @ YIQ_FROM_RGB
    c = params["contrast"].float()
    matrix = c.view(b, 1, 1) * (hue @ saturate)
    # (x + br - m') c + m' with m' = m + br, the mean after the brightness shift.
    grey = params["brightness"].float() + (1 - c) * mean_luma.float().cpu()
    return matrix, grey[:, None].expand(b, 3)


def jitter_colours(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The whole image with each sample's colour jitter applied (B, 3, H, W) in [0, 1]:
    the affine part of :func:`colour_matrix`, then gamma and white balance."""
    b = images.shape[0]
    # The mean luma on every 4th pixel: a pivot for contrast, it need not be exact.
    mean_luma = torch.einsum("c,bchw->b", LUMA.to(images), images[..., ::4, ::4]) / (
        images[0, 0, ::4, ::4].numel()
    )
    matrix, offset = colour_matrix(params, mean_luma)
    x = torch.einsum("bij,bjhw->bihw", matrix.to(images), images)
    x.add_(offset.to(images).view(b, 3, 1, 1)).clamp_(0, 1)
    x.pow_(params["gamma"].to(images).view(b, 1, 1, 1))
    x.mul_(params["white_balance"].to(images).view(b, 3, 1, 1))
    return x.clamp_(0, 1)


def apply_colour_shift(
    images: torch.Tensor, params: dict[str, torch.Tensor], *, inplace: bool = False
) -> torch.Tensor:
    """Images with a spatially varying colour shift; samples not ``applied`` are returned
    unchanged. Only the applied samples are computed. ``inplace``: write into ``images``
    (see :mod:`data_sim.family`)."""
    out, idx = applied_output(images, params, inplace=inplace)
    if idx.numel() == 0:
        return out
    sub = {k: v.cpu()[idx] for k, v in params.items()}
    dev_idx = idx.to(images.device)
    x = images.index_select(0, dev_idx)
    _, _, h, w = x.shape
    field = {k[len("field_") :]: v for k, v in sub.items() if k.startswith("field_")}
    weight = render_field(field, h, w, images.device, step=FIELD_STEP)
    return out.index_copy_(0, dev_idx, torch.lerp(x, jitter_colours(x, sub), weight))


class ColourFamily(Family[ColourShiftConfig]):
    key = "colour"

    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params:
        return sample_colour_params(batch_size, height, width, self.cfg, generator)

    def apply(
        self, images: torch.Tensor, params: Params, mask: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        return apply_colour_shift(images, params, inplace=inplace)

    @classmethod
    def describe(cls, params: Params, index: int) -> str:
        keys = ("brightness", "contrast", "saturation", "hue", "gamma")
        values = (float(params[k][index]) for k in keys)
        return "colour b{:+.2f} c{:.2f} s{:.2f} h{:+.3f} g{:.2f}".format(*values)
