"""Seam metrics: PSNR, SSIM and L1 on the whole image and in a band around the edit
boundary, where seams live, plus two seam-specific band scores. A torchmetrics ``Metric``,
so values sync across DDP ranks. None of them needs pretrained weights (the perceptual
ones, LPIPS, FID and U-IDS/P-IDS, live in :mod:`pixperfect.evaluation.perceptual`).

The band is every pixel within ``band_width`` px of the mask boundary, on both sides. It
splits into the *inner band* (inside the mask: the edit's own rim) and the *outer band*
(outside it: the original photo next to the edit); ``inner_band_*`` / ``outer_band_*`` are
the band's PSNR and CIEDE2000 on each side alone, to tell a refiner that fixes the edit's
rim from one that repaints the photo around it. A side with no pixels (an empty or
full-frame mask) scores as a perfect one: PSNR 100 dB (the cap of every PSNR here, MSE
floored at 1e-10), CIEDE2000 0.

- ``band_ciede2000``: mean CIEDE2000 colour difference (Sharma, Wu & Dalal 2005) between
  prediction and target over the band, from CIE Lab (sRGB, D65, via kornia). About 1 is
  a just-noticeable difference; lower is better.
- ``seam_grad``: the gradient discontinuity of the error field. With e = pred - target
  (RGB in [0, 1]) and forward differences dx, dy,
  ``seam_grad = sqrt(mean over band pixels of mean over channels of (dx e)^2 + (dy e)^2)``,
  an RMS in intensity units per pixel; lower is better, 0 for a perfect image. A uniform
  error (same offset everywhere) scores 0: what it measures is how abruptly the error
  *changes*, which is what makes a seam visible. Because the gradient is squared before
  averaging, a hard colour step of height s across the boundary (one pixel with gradient
  s) scores higher than the same step spread over n pixels (n pixels with s / n):
  s^2 > s^2 / n. Texture or noise that differs from the target inside the band raises it
  too.

Scores are per image, then averaged over images (the convention of restoration papers).
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

from imageops.morphology import dilate, erode

METRIC_NAMES = (
    "psnr",
    "ssim",
    "l1",
    "band_psnr",
    "band_ssim",
    "band_l1",
    "band_ciede2000",
    "seam_grad",
    "inner_band_psnr",
    "outer_band_psnr",
    "inner_band_ciede2000",
    "outer_band_ciede2000",
)
# Direction of each score, for tables: True where higher is better.
HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "l1": False,
    "band_psnr": True,
    "band_ssim": True,
    "band_l1": False,
    "band_ciede2000": False,
    "seam_grad": False,
    "inner_band_psnr": True,
    "outer_band_psnr": True,
    "inner_band_ciede2000": False,
    "outer_band_ciede2000": False,
}


def boundary_band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` of the mask boundary, on both sides (B, 1, H, W) bool."""
    inside = mask > 0.5
    return dilate(inside, width) & ~erode(inside, width)


def inner_outer_bands(mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of :func:`boundary_band` (B, 1, H, W) bool: (inside the mask within
    ``width`` of its boundary, outside the mask within ``width`` of it)."""
    inside = mask > 0.5
    return inside & ~erode(inside, width), dilate(inside, width) & ~inside


def _masked_mean(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B, C, H, W) over ``region`` (B, 1, H, W)."""
    weight = region.float().expand_as(values)
    return (values * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1)


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def band_psnr(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, band_width: int
) -> torch.Tensor:
    """Per-image band PSNR (B,), as :func:`seam_scores` computes it, without its other
    scores (for a caller that needs this one only, every batch)."""
    sq = (pred.float().clamp(0, 1) - target.float()) ** 2
    return _psnr(_masked_mean(sq, boundary_band(mask, band_width)))


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference (kL = kC = kH = 1) between CIE Lab images (B, 3, H, W)
    -> (B, 1, H, W), following Sharma, Wu & Dalal (2005), as ``skimage``'s
    ``deltaE_ciede2000`` does."""
    L1, a1, b1 = lab1.unbind(1)
    L2, a2, b2 = lab2.unbind(1)
    c_bar = 0.5 * (torch.hypot(a1, b1) + torch.hypot(a2, b2))
    c7 = c_bar**7
    g = 0.5 * (1 - torch.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1 = torch.atan2(b1, a1p) % (2 * math.pi)
    h2 = torch.atan2(b2, a2p) % (2 * math.pi)

    l_bar = 0.5 * (L1 + L2)
    t = (l_bar - 50) ** 2
    l_term = (L2 - L1) / (1 + 0.015 * t / torch.sqrt(20 + t))

    cp_bar = 0.5 * (c1 + c2)
    c_term = (c2 - c1) / (1 + 0.045 * cp_bar)

    h_diff, h_sum, cc = h2 - h1, h1 + h2, c1 * c2
    achromatic = cc == 0
    dh = torch.where(h_diff > math.pi, h_diff - 2 * math.pi, h_diff)
    dh = torch.where(h_diff < -math.pi, h_diff + 2 * math.pi, dh)
    dh = torch.where(achromatic, torch.zeros_like(dh), dh)
    dh_term = 2 * torch.sqrt(cc) * torch.sin(dh / 2)

    wrap = ~achromatic & (h_diff.abs() > math.pi)
    h_bar = torch.where(wrap & (h_sum < 2 * math.pi), h_sum + 2 * math.pi, h_sum)
    h_bar = torch.where(wrap & (h_sum >= 2 * math.pi), h_sum - 2 * math.pi, h_bar)
    h_bar = torch.where(achromatic, h_bar * 2, h_bar) * 0.5
    deg = math.pi / 180
    tt = (
        1
        - 0.17 * torch.cos(h_bar - 30 * deg)
        + 0.24 * torch.cos(2 * h_bar)
        + 0.32 * torch.cos(3 * h_bar + 6 * deg)
        - 0.20 * torch.cos(4 * h_bar - 63 * deg)
    )
    h_term = dh_term / (1 + 0.015 * cp_bar * tt)

    c7 = cp_bar**7
    rc = 2 * torch.sqrt(c7 / (c7 + 25.0**7))
    dtheta = 30 * deg * torch.exp(-(((h_bar / deg - 275) / 25) ** 2))
    r_term = -torch.sin(2 * dtheta) * rc * c_term * h_term
    de2 = l_term**2 + c_term**2 + h_term**2 + r_term
    return torch.sqrt(de2.clamp_min(0))[:, None]


def error_gradient_sq(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared gradient of the error field, mean over channels: (B, 1, H, W); forward
    differences, 0 across the last row/column (see ``seam_grad`` in the module docstring)."""
    e = pred - target
    dx = F.pad(e[..., :, 1:] - e[..., :, :-1], (0, 1))
    dy = F.pad(e[..., 1:, :] - e[..., :-1, :], (0, 0, 0, 1))
    return (dx**2 + dy**2).mean(1, keepdim=True)


def _region_ciede2000(
    pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, *parts: torch.Tensor
) -> list[torch.Tensor]:
    """Per-image mean CIEDE2000 over ``region`` (B, 1, H, W), then over each of ``parts``
    (subsets of ``region``), from one colour difference computed on ``region``'s pixels."""
    where = region[:, 0]
    image_index = torch.nonzero(where, as_tuple=True)[0]

    def lab(x: torch.Tensor) -> torch.Tensor:  # (N, 3) pixels as a (1, 3, N, 1) image
        return kornia.color.rgb_to_lab(x.permute(0, 2, 3, 1)[where].T[None, :, :, None])

    de = ciede2000(lab(pred), lab(target))[0, 0, :, 0]

    def per_image(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(pred.shape[0], dtype=de.dtype, device=de.device)
        total.index_add_(0, index, values)
        return total / torch.bincount(index, minlength=pred.shape[0]).clamp_min(1)

    means = [per_image(image_index, de)]
    for part in parts:
        keep = part[:, 0][where]  # which of region's pixels (in the same order) are in part
        means.append(per_image(image_index[keep], de[keep]))
    return means


def seam_scores(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, band_width: int
) -> dict[str, torch.Tensor]:
    """Per-image scores (B,) for images in [0, 1]."""
    pred, target = pred.float().clamp(0, 1), target.float()
    everywhere = torch.ones_like(mask, dtype=torch.bool)
    band = boundary_band(mask, band_width)
    inner, outer = inner_outer_bands(mask, band_width)
    sq, ab = (pred - target) ** 2, (pred - target).abs()
    _, ssim_map = structural_similarity_index_measure(
        pred, target, data_range=1.0, return_full_image=True, reduction="none"
    )
    band_de, inner_de, outer_de = _region_ciede2000(pred, target.clamp(0, 1), band, inner, outer)
    return {
        "psnr": _psnr(_masked_mean(sq, everywhere)),
        "ssim": _masked_mean(ssim_map, everywhere),
        "l1": _masked_mean(ab, everywhere),
        "band_psnr": _psnr(_masked_mean(sq, band)),
        "band_ssim": _masked_mean(ssim_map, band),
        "band_l1": _masked_mean(ab, band),
        "band_ciede2000": band_de,
        "seam_grad": _masked_mean(error_gradient_sq(pred, target), band).sqrt(),
        "inner_band_psnr": _psnr(_masked_mean(sq, inner)),
        "outer_band_psnr": _psnr(_masked_mean(sq, outer)),
        "inner_band_ciede2000": inner_de,
        "outer_band_ciede2000": outer_de,
    }


class SeamMetrics(Metric):
    """Running means of :func:`seam_scores` over images."""

    full_state_update = False

    def __init__(self, band_width: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.band_width = band_width
        for name in METRIC_NAMES:
            self.add_state(
                name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        scores = seam_scores(pred, target, mask, self.band_width)
        for name, value in scores.items():
            setattr(self, name, getattr(self, name) + value.double().sum())
        self.count += pred.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp_min(1)
        return {name: (getattr(self, name) / n).float() for name in METRIC_NAMES}
