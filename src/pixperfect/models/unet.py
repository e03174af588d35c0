"""Small U-Net refiner: (composite RGB, edit mask) -> composite + predicted correction.

Sized to train on a laptop CPU: one convolution at full resolution on the way in and out,
two per level below. The last convolution starts near zero, so an untrained refiner is
almost the identity and training only has to learn the correction. (Exactly zero stalls
learning: the body then gets no gradient until the head has grown, and on the demo budget
it barely did.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixperfect.models.colour_prior import apply_colour_map
from pixperfect.models.residual import ResidualRefiner, apply_correction, conv3x3, decode


def _pooled(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 3C): features averaged inside the edit, outside it and over the whole crop."""
    m = F.adaptive_avg_pool2d(mask.to(x.dtype), x.shape[-2:])
    inside = (x * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-3)
    outside = (x * (1 - m)).sum((2, 3)) / (1 - m).sum((2, 3)).clamp_min(1e-3)
    return torch.cat([inside, outside, x.mean((2, 3))], dim=1)


def _pooled_mlp(channels: int, out: int) -> nn.Sequential:
    """MLP from :func:`_pooled` statistics to ``out`` numbers, its last layer zero so the
    branch it feeds starts as a no-op."""
    mlp = nn.Sequential(nn.Linear(3 * channels, channels), nn.SiLU(), nn.Linear(channels, out))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class GlobalContext(nn.Module):
    """The statistics of the whole crop at every pixel: the bottleneck features averaged
    inside the edit, outside it and over everything go through a small MLP whose output is
    added back at every position. A U-Net's convolutions see a few dozen pixels; a colour
    shift is a property of the whole edit compared with its surroundings. The last layer
    starts at zero, so the branch starts as a no-op."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = _pooled_mlp(channels, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(_pooled(x, mask))[..., None, None]


class ColourHead(nn.Module):
    """A learned change of the edit's colour map: from the pooled bottleneck features, one
    3x4 affine map per image (``x -> x + D x + d``) applied to the start image inside the
    mask. A colour shift is a few numbers for the whole edit; a per-pixel head has to learn
    them pixel by pixel from a loss that texture and content dominate. Starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = _pooled_mlp(channels, 12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        coef = self.mlp(_pooled(x, mask)).float().view(-1, 4, 3)
        delta = apply_colour_map(coef, start.float())
        return start + (mask > 0.5).to(start.dtype) * delta.to(start.dtype)


class UNetRefiner(ResidualRefiner):
    """Residual U-Net; input sides must be multiples of :attr:`stride`."""

    def __init__(
        self,
        base_channels: int = 24,
        depth: int = 3,
        edit_margin: int = -1,
        colour_prior: str = "none",
        prior_gate: bool = True,
        global_context: bool = False,
        colour_head: bool = False,
    ) -> None:
        """``edit_margin`` >= 0: the correction only reaches pixels within that many pixels of
        the edit mask (seams live there); the rest of the photo passes through exactly.
        ``colour_prior`` (:mod:`pixperfect.models.colour_prior`): "reinhard" feeds the
        network the ring colour transfer of the composite too and adds the correction to it,
        so the refiner starts from that baseline instead of the raw composite.
        ``prior_gate`` (with a prior): a learned per-pixel blend between the composite and
        the prior (:class:`~pixperfect.models.residual.PriorGate`) instead of the prior as
        a fixed start, so the network can keep the composite where the prior is wrong.
        ``global_context``: a :class:`GlobalContext` branch at the bottleneck.
        ``colour_head``: a :class:`ColourHead` that changes the start's colour map."""
        super().__init__(base_channels, depth, edit_margin, colour_prior)
        widths = self.widths
        self.down = nn.ModuleList(
            nn.Sequential(
                conv3x3(widths[i], widths[i + 1], stride=2), conv3x3(widths[i + 1], widths[i + 1])
            )
            for i in range(depth)
        )
        self.fuse = nn.ModuleList(
            conv3x3(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self._add_head(prior_gate)
        self.context = GlobalContext(widths[-1]) if global_context else None
        self.colour = ColourHead(widths[-1]) if colour_head else None

    def forward(
        self, composite: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``prior``: the colour prior's image, when computed outside (tiled inference)."""
        x, skips, base = self._encode(composite, mask, prior)
        if self.context is not None:
            x = self.context(x, mask)
        bottleneck = x
        x = decode(self.fuse, self.up, x, skips)
        base = self._start(x, composite, base)
        if self.colour is not None:
            base = self.colour(bottleneck, mask, base)
        return apply_correction(base, mask, self.head(x), self.edit_margin)
