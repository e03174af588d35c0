"""The contract every refiner shares, so all architectures behave the same to the trainer
and to inference: the input-size check, the centred 4-channel input, the near-zero output
head, and the residual output with optional edit-margin gating."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_size(composite: torch.Tensor, stride: int) -> None:
    """Refuse sides that are not multiples of ``stride``, naming it and the fix."""
    h, w = composite.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(
            f"input {h}x{w} is not a multiple of the refiner stride {stride}; pad it "
            "first (pixperfect.inference.pad_to_multiple)"
        )


def centred_input(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W): the network sees a [-1, 1] image and a {-1, 1} mask."""
    return torch.cat([composite * 2 - 1, mask * 2 - 1], dim=1)


def near_zero_(head: nn.Conv2d) -> nn.Conv2d:
    """Start the output head near zero, so an untrained refiner is almost the identity.
    Exactly zero stalls learning: the body then gets no gradient until the head has grown."""
    nn.init.normal_(head.weight, std=1e-2)
    nn.init.zeros_(head.bias)
    return head


def apply_correction(
    composite: torch.Tensor, mask: torch.Tensor, correction: torch.Tensor, edit_margin: int
) -> torch.Tensor:
    """composite + correction; with ``edit_margin`` >= 0 the correction only reaches pixels
    within that many pixels of the mask (seams live there), the rest passes through exactly."""
    if edit_margin >= 0:
        m = edit_margin
        correction = correction * F.max_pool2d(mask, 2 * m + 1, stride=1, padding=m)
    return composite + correction
