"""The texture gap across an edit's seam: does the grain just inside the mask match the
grain just outside it as it does in the photo? A statistic that needs no pretrained
weights; this module owns its definition, its per-sample score and its summary over a set
of samples (``pixperfect evaluate`` reports both, :mod:`pixperfect.evaluation.evaluate`).

Definition, for an image x (RGB in [0, 1]) and its edit mask:

1. *High frequency*: h = Y - G(Y), where Y is x's luminance (Rec. 601,
   ``kornia.color.rgb_to_grayscale``) and G a Gaussian blur of sigma ``SIGMA_PX`` = 1 px
   (7x7 kernel, reflected at the image border). Smooth shading and linear ramps leave
   nothing; grain, noise, JPEG ringing and fine detail do.
2. *Rings* (:func:`texture_rings`): the inner ring is the mask's pixels more than
   ``GUARD_PX`` and at most ``GUARD_PX + width`` px (square distance) from its boundary,
   the outer ring the same outside it; ``width`` is the evaluation's band width (8 px).
   The guard is the blur's radius, so no ring pixel's h sees across the boundary: a colour
   step at the seam (which ``seam_grad`` measures) is not mistaken for grain.
3. *Energies*: E_in and E_out, the mean of h^2 over each ring.
4. *Balance* (:func:`texture_balance`): b(x) = 10 log10((E_in + eps) / (E_out + eps)) dB,
   eps = ``ENERGY_FLOOR`` = (0.5 / 255)^2, a quarter of an 8-bit level squared, above the
   energy of 8-bit quantisation (about 0.06 level^2 after the high-pass): flat rings
   compare as equal instead of as a ratio of rounding noise. A log ratio, so what is
   compared is the scale of the grain on each side, not the content's contrast.
5. *Texture gap* of an output against the photo (:func:`texture_gap`):
   ``|b(output) - b(target)|`` dB; 0 when the output's grain is as much finer or coarser
   inside than outside as the photo's own (photos may differ inside and outside: what
   counts is the mismatch the edit introduced). Lower is better. Noise of the right energy
   closes the gap as well as the photo's own grain does: it measures grain energy, not the
   realisation.
6. *Gap closed* over a set of samples (:func:`summarise`):
   ``100 * (1 - mean(gap of the method) / mean(gap of identity))`` %, identity being the
   composite as the editor hands it over; positive means closer to the photo's own texture
   balance, 100 a perfect match, negative a wider gap than the composite's. A ratio of
   means, so samples without a texture seam weigh nothing by themselves.

A sample whose inner or outer ring has fewer than ``MIN_RING_PIXELS`` pixels (an empty,
full-frame or tiny mask) has no texture gap: NaN per sample, left out of both means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch

from imageops.morphology import dilate, erode

SIGMA_PX = 1.0  # the high-pass's Gaussian
GUARD_PX = math.ceil(3 * SIGMA_PX)  # the blur's radius: no ring pixel sees across the seam
ENERGY_FLOOR = (0.5 / 255) ** 2  # eps added to each energy
MIN_RING_PIXELS = 32  # fewer pixels in either ring: no texture gap for the sample
TEXTURE_METRICS = ("texture_gap", "texture_gap_closed")


def high_frequency(image: torch.Tensor) -> torch.Tensor:
    """Luminance minus its Gaussian blur (sigma ``SIGMA_PX``): (B, 1, H, W) from (B, 3, H, W)
    RGB or (B, 1, H, W) grey images in [0, 1]."""
    image = image.float()
    luma = kornia.color.rgb_to_grayscale(image) if image.shape[1] == 3 else image
    size = 2 * GUARD_PX + 1
    blurred = kornia.filters.gaussian_blur2d(
        luma, (size, size), (SIGMA_PX, SIGMA_PX), border_type="reflect"
    )
    return luma - blurred


def texture_rings(mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inner ring, outer ring), each (B, 1, H, W) bool: the pixels inside / outside the mask
    more than ``GUARD_PX`` and at most ``GUARD_PX + width`` px from its boundary."""
    inside = mask > 0.5
    inner = erode(inside, GUARD_PX) & ~erode(inside, GUARD_PX + width)
    outer = dilate(inside, GUARD_PX + width) & ~dilate(inside, GUARD_PX)
    return inner, outer


def _ring_energy(residual_sq: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """Mean of ``residual_sq`` over ``ring`` per image (B,), NaN for a ring too small."""
    count = ring.sum(dim=(1, 2, 3))
    energy = (residual_sq * ring).sum(dim=(1, 2, 3)) / count.clamp_min(1)
    return torch.where(count >= MIN_RING_PIXELS, energy, torch.full_like(energy, math.nan))


def texture_balance(image: torch.Tensor, rings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """10 log10((E_in + eps) / (E_out + eps)) per image (B,), dB: how much more
    high-frequency energy the inner ring holds than the outer one; NaN where a ring has
    fewer than ``MIN_RING_PIXELS`` pixels."""
    residual_sq = high_frequency(image) ** 2
    inner, outer = rings
    e_in, e_out = _ring_energy(residual_sq, inner), _ring_energy(residual_sq, outer)
    return 10 * torch.log10((e_in + ENERGY_FLOOR) / (e_out + ENERGY_FLOOR))


def texture_gap(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, width: int
) -> torch.Tensor:
    """``|balance(pred) - balance(target)|`` per image (B,), dB; NaN where the rings are too
    small (module docstring)."""
    rings = texture_rings(mask, width)
    return (texture_balance(pred.clamp(0, 1), rings) - texture_balance(target, rings)).abs()


def summarise(
    method_gaps: Sequence[float | None], identity_gaps: Sequence[float | None]
) -> dict[str, float | None]:
    """``texture_gap``: the method's mean gap (dB) and ``texture_gap_closed``: the share of
    identity's mean gap it closes (%), over the samples where both gaps exist (None and NaN
    left out). Either is None when no sample has a gap; the share is None when identity's
    mean gap is 0 (nothing to close)."""
    if len(method_gaps) != len(identity_gaps):
        raise ValueError(f"{len(method_gaps)} method gaps for {len(identity_gaps)} samples")
    pairs = [
        (float(m), float(i))
        for m, i in zip(method_gaps, identity_gaps, strict=True)
        if m is not None and i is not None and math.isfinite(m) and math.isfinite(i)
    ]
    if not pairs:
        return {"texture_gap": None, "texture_gap_closed": None}
    method = sum(m for m, _ in pairs) / len(pairs)
    identity = sum(i for _, i in pairs) / len(pairs)
    closed = 100 * (1 - method / identity) if identity > 0 else None
    return {"texture_gap": method, "texture_gap_closed": closed}
