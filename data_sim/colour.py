"""Non-uniform colour shift (docs/method.md §5.1): the tone and colour drift of a VAE-decoded
region.

The whole image is colour-jittered per sample (brightness, contrast, saturation and hue as
one affine colour matrix per sample, then gamma and white balance, batched on the device)
and blended with the original through a smooth random field, so the shift varies across
the region; the simulator uses the result inside the compositing alpha only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from data_sim.family import Params, PlannedFamily
from data_sim.fields import FieldConfig, render_field, sample_field_params
from data_sim.sampling import applied_indices, bernoulli, check_range, uniform
from data_sim.transfer import to_device

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


# The constant tables the colour maths needs, shipped to the device with the plan.
CONSTANTS = {"luma": LUMA, "yiq_from_rgb": YIQ_FROM_RGB, "rgb_from_yiq": RGB_FROM_YIQ}


def colour_matrix(
    params: dict[str, torch.Tensor],
    mean_luma: torch.Tensor,
    constants: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample affine map ``x -> M x + o`` (M: (B, 3, 3), o: (B, 3)) for brightness,
    contrast about the image's ``mean_luma`` (B,), saturation (a lerp towards luma) and hue.

    All four are linear in RGB, so they compose into one matrix: one pass over the pixels
    instead of four passes and two HSV round trips (the HSV route was most of the
    simulator's CPU time). Saturation and hue keep grey at grey, so the offset is grey too.
    Computed on the device of ``params`` (``constants``: :data:`CONSTANTS` there).
    """
    c = CONSTANTS if constants is None else constants
    b = params["hue"].shape[0]
    device = params["hue"].device
    eye = torch.eye(3, device=device).expand(b, 3, 3)
    s = params["saturation"].float().view(b, 1, 1)
    saturate = s * eye + (1 - s) * c["luma"].view(1, 1, 3)  # each row: s x + (1 - s) luma(x)
    angle = params["hue"].float() * 2 * math.pi
    rotate = torch.zeros(b, 3, 3, device=device)
    rotate[:, 0, 0] = 1
    rotate[:, 1, 1], rotate[:, 1, 2] = angle.cos(), -angle.sin()
    rotate[:, 2, 1], rotate[:, 2, 2] = angle.sin(), angle.cos()
    hue = c["rgb_from_yiq"] @ rotate @ c["yiq_from_rgb"]
    contrast = params["contrast"].float()
    matrix = contrast.view(b, 1, 1) * (hue @ saturate)
    # (x + br - m') c + m' with m' = m + br, the mean after the brightness shift.
    grey = params["brightness"].float() + (1 - contrast) * mean_luma.float()
    return matrix, grey[:, None].expand(b, 3)


def jitter_colours(
    images: torch.Tensor,
    params: dict[str, torch.Tensor],
    constants: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The whole image with each sample's colour jitter applied (B, 3, H, W) in [0, 1]:
    the affine part of :func:`colour_matrix`, then gamma and white balance. ``params`` and
    ``constants`` (:data:`CONSTANTS`) on the images' device make no copy."""
    if constants is None:
        params, constants = to_device((params, CONSTANTS), images.device)
    b = images.shape[0]
    # The mean luma on every 4th pixel: a pivot for contrast, it need not be exact.
    mean_luma = torch.einsum("c,bchw->b", constants["luma"].to(images), images[..., ::4, ::4]) / (
        images[0, 0, ::4, ::4].numel()
    )
    matrix, offset = colour_matrix(params, mean_luma, constants)
    x = torch.einsum("bij,bjhw->bihw", matrix.to(images), images)
    x.add_(offset.to(images).view(b, 3, 1, 1)).clamp_(0, 1)
    x.pow_(params["gamma"].to(images).view(b, 1, 1, 1))
    x.mul_(params["white_balance"].to(images).view(b, 3, 1, 1))
    return x.clamp_(0, 1)


def plan_colour(params: dict[str, torch.Tensor]) -> dict | None:
    """The CPU-side part of :func:`apply_colour_shift`: the applied samples, their
    parameters and the constant tables (None: no sample is applied)."""
    idx = applied_indices(params)
    if idx.numel() == 0:
        return None
    return {"idx": idx, "sub": {k: v.cpu()[idx] for k, v in params.items()}, "constants": CONSTANTS}


def run_colour(images: torch.Tensor, plan: dict | None, *, inplace: bool = False) -> torch.Tensor:
    """The device part of :func:`apply_colour_shift` (``plan`` from :func:`plan_colour`, on
    the images' device): no host read."""
    out = images if inplace else images.clone()
    if plan is None:
        return out
    sub, idx = plan["sub"], plan["idx"]
    x = images.index_select(0, idx)
    _, _, h, w = x.shape
    field = {k[len("field_") :]: v for k, v in sub.items() if k.startswith("field_")}
    weight = render_field(field, h, w, images.device, step=FIELD_STEP)
    jittered = jitter_colours(x, sub, plan["constants"])
    return out.index_copy_(0, idx, torch.lerp(x, jittered, weight))


def apply_colour_shift(
    images: torch.Tensor, params: dict[str, torch.Tensor], *, inplace: bool = False
) -> torch.Tensor:
    """Images with a spatially varying colour shift; samples not ``applied`` are returned
    unchanged. Only the applied samples are computed. ``inplace``: write into ``images``
    (see :mod:`data_sim.family`)."""
    return run_colour(images, to_device(plan_colour(params), images.device), inplace=inplace)


class ColourFamily(PlannedFamily[ColourShiftConfig]):
    key = "colour"

    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params:
        return sample_colour_params(batch_size, height, width, self.cfg, generator)

    def plan(self, params: Params, height: int, width: int) -> dict | None:
        return plan_colour(params)

    def run(
        self, images: torch.Tensor, params: Params, plan: dict | None, mask: torch.Tensor, *,
        inplace: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        return run_colour(images, plan, inplace=inplace)

    @classmethod
    def describe(cls, params: Params, index: int) -> str:
        keys = ("brightness", "contrast", "saturation", "hue", "gamma")
        values = (float(params[k][index]) for k in keys)
        return "colour b{:+.2f} c{:.2f} s{:.2f} h{:+.3f} g{:.2f}".format(*values)
