"""Colour priors: a classical, batched first guess that a refiner corrects further.

``ring_colour_transfer`` is Reinhard et al.'s (2001) colour transfer restricted to the
seam: per image and per CIE Lab channel, the mean and standard deviation of a ring just
inside the mask boundary are mapped onto those of a ring just outside it, and that affine
map is applied to the whole masked region (the std ratio clamped to [1/2, 2], so a flat
ring cannot blow up the edit). It fixes global colour and tone shifts of the edit, which a
small convolutional refiner cannot see: its receptive field covers a few dozen pixels, the
shift is a statistic of the whole edit. It is the ``reinhard`` evaluation baseline too,
so the refiner's starting point is a number the evaluation table reports.

Everything is batched tensor arithmetic (kornia's Lab, pooling for the rings), so the prior
runs on the training device inside the step and in inference, in float32 with autocast off.
"""

from __future__ import annotations

import kornia
import torch

from pixperfect.morphology import dilate, erode

RING_PX = 8  # width of the inner and outer rings whose statistics are matched
MAX_RATIO = 2.0  # clamp of the std ratio


def _masked_stats(lab: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per image and channel mean and std of ``lab`` over a bool region, and its count."""
    w = region.to(lab.dtype)
    n = w.sum((2, 3), keepdim=True)
    mean = (lab * w).sum((2, 3), keepdim=True) / n.clamp_min(1)
    var = ((lab - mean).square() * w).sum((2, 3), keepdim=True) / n.clamp_min(1)
    return mean, var.sqrt(), n


def ring_colour_transfer(
    composite: torch.Tensor, mask: torch.Tensor, ring: int = RING_PX, max_ratio: float = MAX_RATIO
) -> torch.Tensor:
    """(B, 3, H, W) ``composite`` in [0, 1] with Reinhard transfer inside ``mask``
    ((B, 1, H, W), edited where > 0.5); outside the mask, and for images whose mask is
    empty or leaves no surroundings, the composite is returned unchanged (bit-exact)."""
    if composite.ndim != 4 or composite.shape[1] != 3 or mask.shape[1:2] != (1,):
        raise ValueError(
            f"expected (B, 3, H, W) images and (B, 1, H, W) masks, got {tuple(composite.shape)} "
            f"and {tuple(mask.shape)}"
        )
    with torch.autocast(composite.device.type, enabled=False):
        x = composite.float()
        inside = mask > 0.5
        lab = kornia.color.rgb_to_lab(x)
        mu_in, sd_in, n_in = _masked_stats(lab, inside & ~erode(inside, ring))
        mu_out, sd_out, n_out = _masked_stats(lab, dilate(inside, ring) & ~inside)
        ratio = (sd_out / sd_in.clamp_min(1e-6)).clamp(1 / max_ratio, max_ratio)
        moved = kornia.color.lab_to_rgb((lab - mu_in) * ratio + mu_out, clip=True)
        usable = (n_in > 0) & (n_out > 0)
        return torch.where(inside & usable, moved, x).to(composite.dtype)


PRIORS = {
    "none": lambda composite, mask: composite,
    "reinhard": ring_colour_transfer,
}
COLOUR_PRIORS = tuple(PRIORS)  # the choices of ``model.colour_prior``


def check_colour_prior(kind: str) -> None:
    if kind not in PRIORS:
        raise ValueError(
            f"unknown model.colour_prior={kind!r}; available: {', '.join(COLOUR_PRIORS)}"
        )


def apply_colour_prior(kind: str, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The named prior of ``composite`` (``"none"``: the composite itself)."""
    check_colour_prior(kind)
    return PRIORS[kind](composite, mask)
