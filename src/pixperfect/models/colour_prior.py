"""Colour priors: a classical, batched first guess that a refiner corrects further.

``ring_colour_transfer`` is Reinhard et al.'s (2001) colour transfer restricted to the
seam: per image and per CIE Lab channel, the mean and standard deviation of a ring just
inside the mask boundary are mapped onto those of a ring just outside it, and that affine
map is applied to the whole masked region (the std ratio clamped to [1/2, 2], so a flat
ring cannot blow up the edit). ``seam_affine_transfer`` fits one 3x4 colour map per image
across the seam instead, pairing each stretch of the inner ring with the outer ring next to
it, so two rings that hold different content (sky on one side, roof on the other) do not
move the edit; on Kodak it gains about twice as much as Reinhard with a fraction of its
harm (docs/refine.md, "The shipped refiner").

Both fix global colour and tone shifts of the edit, which a small convolutional refiner
cannot see: its receptive field covers a few dozen pixels, the shift is a statistic of the
whole edit. Each is an evaluation baseline of the same name too, so the refiner's starting
point is a number the evaluation table reports.

Everything is batched tensor arithmetic (kornia's Lab and Gaussian filters, pooling for the
rings), so the priors run on the training device inside the step and in inference, in
float32 with autocast off.
"""

from __future__ import annotations

import kornia
import torch

from imageops.morphology import dilate, erode
from pixperfect.errors import ConfigError

RING_PX = 8  # width of the inner and outer rings whose statistics are matched
MAX_RATIO = 2.0  # clamp of the std ratio


def _check_shapes(composite: torch.Tensor, mask: torch.Tensor) -> None:
    if composite.ndim != 4 or composite.shape[1] != 3 or mask.shape[1:2] != (1,):
        raise ValueError(
            f"expected (B, 3, H, W) images and (B, 1, H, W) masks, got {tuple(composite.shape)} "
            f"and {tuple(mask.shape)}"
        )


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
    _check_shapes(composite, mask)
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


SEAM_SIGMA = 4.0  # px: the Gaussian that pairs each side of the seam with the other
SEAM_RIDGE = (1.0, 1.0, 1.0, 0.1)  # pull of the fit towards no change: matrix rows, offset
SEAM_MIN_SUPPORT = 0.2  # share of a pixel's Gaussian that must fall on each ring


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = int(4 * sigma) | 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="constant")


def apply_colour_map(coef: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``image`` (B, 3, H, W) through one affine colour map per image: ``coef`` (B, 4, 3)
    holds the 3x3 matrix (transposed: row k is input channel k) and the offset as row 3."""
    ones = torch.ones_like(image[:, :1])
    return torch.einsum("bkc,bkhw->bchw", coef, torch.cat([image, ones], 1))


def seam_affine_transfer(
    composite: torch.Tensor,
    mask: torch.Tensor,
    ring: int = RING_PX,
    sigma: float = SEAM_SIGMA,
    ridge: tuple[float, float, float, float] = SEAM_RIDGE,
) -> torch.Tensor:
    """(B, 3, H, W) ``composite`` with one affine colour map per image (``x -> A x + b``,
    3x4) applied inside ``mask``, fitted so that the edit's side of the seam matches the
    photo's side *at the same place along the seam*.

    Reinhard matches the statistics of the two rings as wholes, so a ring that holds other
    content on one side (sky above, a roof below) moves the whole edit. Here each seam pixel
    compares like with like: the Gaussian-weighted mean colour of the inner ring near it
    against that of the outer ring near it (``sigma`` px), and a least-squares fit over the
    seam (2 px either side) finds the colour map between them. The fit is a ridge regression
    towards the identity map (``ridge`` per row of the 4x4 normal equations: the matrix,
    then the offset), so a short or ambiguous seam changes little: on Kodak the ridge
    halves the prior's worst case and its harm rate. The colour shift the simulator draws
    (docs/method.md §5.1: an affine jitter, gamma and white balance) is close to affine in RGB.

    Outside the mask, and where the mask leaves no seam, the composite is returned
    unchanged (bit-exact). Batched tensor arithmetic in float32 on the input's device."""
    _check_shapes(composite, mask)
    with torch.autocast(composite.device.type, enabled=False):
        x = composite.float()
        inside = mask > 0.5
        inner = (inside & ~erode(inside, ring)).float()
        outer = (dilate(inside, ring) & ~inside).float()
        inner_support, outer_support = _smooth(inner, sigma), _smooth(outer, sigma)
        inner_mean = _smooth(x * inner, sigma) / inner_support.clamp_min(1e-4)
        outer_mean = _smooth(x * outer, sigma) / outer_support.clamp_min(1e-4)
        seam = dilate(inside, 2) & ~erode(inside, 2)
        weight = (
            (seam & (inner_support > SEAM_MIN_SUPPORT) & (outer_support > SEAM_MIN_SUPPORT))
            .float()
            .flatten(2)
        )
        b = x.shape[0]
        ones = torch.ones_like(x[:, :1])
        design = torch.cat([inner_mean, ones], 1).flatten(2)  # (B, 4, N)
        count = weight.sum(-1, keepdim=True).clamp_min(1)
        gram = (design * weight) @ design.transpose(1, 2) / count  # (B, 4, 4)
        cross = (design * weight) @ outer_mean.flatten(2).transpose(1, 2) / count  # (B, 4, 3)
        reg = torch.diag(torch.tensor(ridge, device=x.device)).expand(b, 4, 4)
        identity = torch.eye(4, 3, device=x.device).expand(b, 4, 3)
        coef = torch.linalg.solve(gram + reg, cross + reg @ identity)  # (B, 4, 3)
        moved = apply_colour_map(coef, x).clamp(0, 1)
        usable = weight.sum(-1).view(b, 1, 1, 1) > 0
        return torch.where(inside & usable, moved, x).to(composite.dtype)


PRIORS = {
    "none": lambda composite, mask: composite,
    "reinhard": ring_colour_transfer,
    "seam_affine": seam_affine_transfer,
}
COLOUR_PRIORS = tuple(PRIORS)  # the choices of ``model.colour_prior``


def check_colour_prior(kind: str) -> None:
    if kind not in PRIORS:
        raise ConfigError(
            f"unknown model.colour_prior={kind!r}; available: {', '.join(COLOUR_PRIORS)}"
        )


def apply_colour_prior(kind: str, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The named prior of ``composite`` (``"none"``: the composite itself)."""
    check_colour_prior(kind)
    return PRIORS[kind](composite, mask)
