"""Seam metrics: PSNR, SSIM and L1 on the whole image and in a band around the edit
boundary, where seams live. A torchmetrics ``Metric``, so values sync across DDP ranks.

Scores are per image, then averaged over images (the convention of restoration papers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

METRIC_NAMES = ("psnr", "ssim", "l1", "band_psnr", "band_ssim", "band_l1")


def boundary_band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` of the mask boundary, on both sides (B, 1, H, W) bool."""
    m = (mask > 0.5).float()
    k = 2 * width + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=width)
    eroded = 1 - F.max_pool2d(1 - m, k, stride=1, padding=width)
    return (dilated - eroded) > 0.5


def _masked_mean(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B, C, H, W) over ``region`` (B, 1, H, W)."""
    weight = region.float().expand_as(values)
    return (values * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1)


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def seam_scores(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, band_width: int
) -> dict[str, torch.Tensor]:
    """Per-image scores (B,) for images in [0, 1]."""
    pred, target = pred.float().clamp(0, 1), target.float()
    everywhere = torch.ones_like(mask, dtype=torch.bool)
    band = boundary_band(mask, band_width)
    sq, ab = (pred - target) ** 2, (pred - target).abs()
    _, ssim_map = structural_similarity_index_measure(
        pred, target, data_range=1.0, return_full_image=True, reduction="none"
    )
    return {
        "psnr": _psnr(_masked_mean(sq, everywhere)),
        "ssim": _masked_mean(ssim_map, everywhere),
        "l1": _masked_mean(ab, everywhere),
        "band_psnr": _psnr(_masked_mean(sq, band)),
        "band_ssim": _masked_mean(ssim_map, band),
        "band_l1": _masked_mean(ab, band),
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
