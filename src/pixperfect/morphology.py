"""Square binary morphology on batched masks, shared by the metrics' boundary band, the
colour prior's rings and the baselines. Max pooling pads with -inf, so the image border
neither adds nor removes mask: a mask touching the border is not eroded from it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of a bool (B, 1, H, W) mask by ``radius`` px."""
    k = 2 * radius + 1
    return F.max_pool2d(mask.float(), k, stride=1, padding=radius) > 0.5


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square erosion of a bool (B, 1, H, W) mask by ``radius`` px."""
    return ~dilate(~mask, radius)
