"""A spatially varying colour correction: one 3x4 colour map per pixel, predicted coarse.

The seam-affine prior fits one affine colour map per edit. The simulated colour shift (and
a diffusion editor's) varies smoothly across the edit, and an oracle that knows the best
smooth correction field gains about 0.6 dB more than the best single map on Kodak
(docs/evaluation.md). PCT-Net (Guerreiro et al., CVPR 2023) predicts such a field of
per-pixel colour transforms at low resolution and upsamples it; that is what this does, on
top of the refiner's start image (the gated colour prior), so it starts at the prior:
``start + inside * (D(x, y) [start; 1])`` with ``D`` near zero at initialisation (its last
layer's weights drawn with ``FIELD_STD``, not zero: a zero layer gives the features it
reads no gradient until it has grown).

A colour map is a few numbers per region, smooth by construction (bilinear upsampling of a
grid at the bottleneck's resolution), so it moves colour without touching texture, which
the residual head keeps doing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixperfect.models.blocks import ReadOut

FIELD_STD = 1e-4  # the last layer's weights: colour-map changes of a few 1/10000


class ColourField(nn.Module):
    """Per-pixel affine colour maps from coarse features, added to the identity map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.coef = nn.Sequential(ReadOut(channels), nn.Conv2d(2 * channels, 12, 3, padding=1))
        nn.init.normal_(self.coef[-1].weight, std=FIELD_STD)
        nn.init.zeros_(self.coef[-1].bias)

    def coefficients(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, 4, 3, H, W): the change of each pixel's colour map (rows: R, G, B, offset)."""
        coarse = self.coef(features).float()
        fine = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        return fine.view(fine.shape[0], 4, 3, *size)

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        coef = self.coefficients(features, start.shape[-2:])
        x = start.float()
        homogeneous = torch.cat([x, torch.ones_like(x[:, :1])], 1)  # (B, 4, H, W)
        delta = torch.einsum("bkchw,bkhw->bchw", coef, homogeneous)
        inside = (mask > 0.5).to(x.dtype)
        return (x + inside * delta).to(start.dtype)
