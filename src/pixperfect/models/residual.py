"""The contract every refiner shares, so all architectures behave the same to the trainer
and to inference: the input-size check, the centred input (composite, mask and, with a
colour prior, the prior's image), the near-zero output head, the per-pixel gate between
the composite and the prior, and the residual output on top of that start with optional
edit-margin gating. :class:`ResidualRefiner` is that frame; an architecture adds its
encoder and decoder levels."""

from __future__ import annotations

import torch
from torch import nn

from imageops.morphology import max_filter
from pixperfect.models.colour_prior import apply_colour_prior, check_colour_prior


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


def input_channels(colour_prior: str) -> int:
    """Channels of :func:`refiner_input`: composite and mask, plus the prior's image."""
    return 4 if colour_prior == "none" else 7


def refiner_input(
    composite: torch.Tensor, mask: torch.Tensor, colour_prior: str, prior: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(network input, base image the correction is added to). ``prior`` may be passed in
    precomputed (tiled inference computes it once on the whole crop, so every tile starts
    from the same statistics); otherwise it is computed here."""
    if colour_prior == "none":
        return centred_input(composite, mask), composite
    if prior is None:
        prior = apply_colour_prior(colour_prior, composite, mask)
    return torch.cat([centred_input(composite, mask), prior * 2 - 1], dim=1), prior


def near_zero_(head: nn.Conv2d, std: float = 1e-2) -> nn.Conv2d:
    """Start the output head near zero, so an untrained refiner is almost the identity.
    Exactly zero stalls learning: the body then gets no gradient until the head has grown."""
    nn.init.normal_(head.weight, std=std)
    nn.init.zeros_(head.bias)
    return head


GATE_OPEN = 3.0  # initial gate logit: start 95% of the way to the prior (what it learns from)


class PriorGate(nn.Module):
    """Per pixel, how far to move from the composite towards the colour prior:
    ``start = composite + sigmoid(g) * (prior - composite)``. The prior is a guess from ring
    statistics; where the rings differ in content rather than colour it is wrong, and the
    network closes the gate there and keeps the composite. Starts open (``GATE_OPEN``), the
    way the refiner learned before it had a gate, with weights near zero so it learns."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.normal_(self.conv.weight, std=1e-2)
        nn.init.constant_(self.conv.bias, GATE_OPEN)

    def forward(
        self, features: torch.Tensor, composite: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor:
        gate = torch.sigmoid(self.conv(features).float()).to(composite.dtype)
        return composite + gate * (prior - composite)


def apply_correction(
    composite: torch.Tensor, mask: torch.Tensor, correction: torch.Tensor, edit_margin: int
) -> torch.Tensor:
    """composite + correction; with ``edit_margin`` >= 0 the correction only reaches pixels
    within that many pixels of the mask (seams live there), the rest passes through exactly."""
    if edit_margin >= 0:
        correction = correction * max_filter(mask, edit_margin)
    return composite + correction


def encode(
    stem: nn.Module, downs: nn.ModuleList, inputs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder half of a U-shaped refiner: the deepest features, and the features of
    every shallower level (the skips, shallowest first) for :func:`decode`."""
    x = stem(inputs)
    skips = [x]
    for down in downs:
        x = down(x)
        skips.append(x)
    skips.pop()
    return x, skips


def decode(
    fuses: nn.ModuleList, up: nn.Module, x: torch.Tensor, skips: list[torch.Tensor]
) -> torch.Tensor:
    """The decoder half: upsample, concatenate the skip of that level, fuse; deepest first.
    Consumes ``skips``."""
    for fuse in fuses:
        x = fuse(torch.cat([up(x), skips.pop()], dim=1))
    return x


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU())


class ResidualRefiner(nn.Module):
    """The frame of a U-shaped refiner: stem, upsampling, near-zero head and prior gate, the
    input check and the residual output. A subclass builds ``self.down`` (one module per
    encoder level, widths :attr:`widths`) and ``self.fuse`` (one per decoder level, deepest
    first) after ``super().__init__`` and then calls :meth:`_add_head`: modules are built,
    and so drawn from the random generator, in the order stem, body, head, gate."""

    def __init__(self, base_channels: int, depth: int, edit_margin: int, colour_prior: str) -> None:
        check_colour_prior(colour_prior)
        super().__init__()
        self.colour_prior = colour_prior
        self.stride = 2**depth
        self.edit_margin = edit_margin
        self.widths = [base_channels * min(2**i, 8) for i in range(depth + 1)]
        self.stem = conv3x3(input_channels(colour_prior), self.widths[0])
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def _add_head(
        self, prior_gate: bool, channels: int | None = None, head_std: float = 1e-2
    ) -> None:
        """The head (weights drawn with ``head_std``) and the gate, reading ``channels``
        features (default: the top width)."""
        channels = channels or self.widths[0]
        self.head = near_zero_(nn.Conv2d(channels, 3, 3, padding=1), head_std)
        use_gate = prior_gate and self.colour_prior != "none"
        self.gate = PriorGate(channels) if use_gate else None

    def _encode(
        self, composite: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(deepest features, skips, base image): see :func:`refiner_input`, :func:`encode`."""
        check_size(composite, self.stride)
        inputs, base = refiner_input(composite, mask, self.colour_prior, prior)
        x, skips = encode(self.stem, self.down, inputs)
        return x, skips, base

    def _start(
        self, features: torch.Tensor, composite: torch.Tensor, base: torch.Tensor
    ) -> torch.Tensor:
        """The image the correction is added to: the base, through the gate if there is one."""
        return base if self.gate is None else self.gate(features, composite, base)
