"""Padding images to a multiple of a network's stride: shared by the latent codecs (the VAE
round trip) and by inference (the refiner's input)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right to multiples of ``multiple``; returns the padded
    tensor and the original (H, W) to crop back to.

    Reflection keeps the border statistics natural, so a codec or the refiner sees no hard
    edge; it needs the pad to be smaller than the side, so tiny inputs are replicated."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
