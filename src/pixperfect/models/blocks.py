"""Building blocks of the refiners whose every level trains: GroupNorm, the pre-activation
residual block with LayerScale, a residual level, and the scale of a near-zero head that
reads normalised features (docs/training.md, "Why the network learned nothing on its
prior")."""

from __future__ import annotations

import torch
from torch import nn

RES_SCALE = 0.1  # initial LayerScale of every residual branch
HEAD_STD = 1e-3  # head weights: a start of a few 1/1000 on normalised features


def group_norm(channels: int) -> nn.GroupNorm:
    """Eight groups where the width allows (GroupNorm: per sample, so training crops and a
    single full image at inference are normalised alike, unlike BatchNorm)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + gamma * body(x)``, GroupNorm on the branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.gamma = nn.Parameter(torch.full((1, channels, 1, 1), RES_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.body(x)


class ReadOut(nn.Module):
    """What an output layer (head, gate, colour map) reads: the normalised features beside
    the raw stream, ``cat([SiLU(GN(x)), x])`` (2x the channels). Normalised features alone
    carry no absolute scale, and a colour shift's size is exactly that: a head that read
    only them learned no colour correction (docs/training.md)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.Sequential(group_norm(channels), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.norm(x), x], dim=1)


def residual_level(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    """A change of width (a stride-2 3x3 conv down, a 1x1 conv after a concatenation up),
    then ``blocks`` residual blocks."""
    kernel = 3 if stride == 2 else 1
    change = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    return nn.Sequential(change, *(ResBlock(cout) for _ in range(blocks)))
