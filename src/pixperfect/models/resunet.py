"""A U-Net refiner whose every level trains: residual blocks with GroupNorm.

The plain U-Net (:mod:`pixperfect.models.unet`) stacks convolutions without normalisation
behind a near-zero head. Measured at initialisation, its deepest level and its global
branch get mean gradients of 1e-9 to 5e-8 per weight, at or below Adam's eps: they do not
train (docs/training.md, "Why the network learned nothing on its prior"). Here every level
is a pre-activation residual stream:

    stem 3x3 -> depth x [stride-2 conv, ResBlock x blocks] -> global context
             -> depth x [upsample, concat skip, 1x1 conv, ResBlock x blocks]
             -> [GroupNorm, SiLU](x) beside x -> near-zero head (and gate, colour field)

- Each :class:`ResBlock` is ``x + gamma * conv(SiLU(GN(conv(SiLU(GN(x))))))``: the
  normalisation sits on the branch only, so the stream keeps the absolute colour the
  refiner must correct (GroupNorm on the stream would erase it), and the per-channel
  ``gamma`` (LayerScale, starting at ``RES_SCALE``) keeps the stream's scale through depth
  at initialisation.
- Gradients reach every level through the identity paths, and the head reads normalised
  features, so its small initial weights scale every level's gradient alike instead of
  compounding with depth; it reads the raw stream beside them
  (:class:`~pixperfect.models.blocks.ReadOut`), since normalised features have lost the
  absolute size of a colour shift.
- Optional :class:`~pixperfect.models.colour_field.ColourField`: a per-pixel 3x4 colour
  map predicted at the bottleneck's resolution, upsampled and applied to the start image
  inside the edit (PCT-Net's idea), starting at no change, i.e. at the colour prior.
"""

from __future__ import annotations

import torch
from torch import nn

from pixperfect.models.blocks import HEAD_STD, ReadOut, residual_level
from pixperfect.models.colour_field import ColourField
from pixperfect.models.residual import ResidualRefiner, apply_correction, decode
from pixperfect.models.unet import GlobalContext

CONTEXT_STD = 1e-3  # the global branch's output layer (it feeds features, not pixels)


class ResUNetRefiner(ResidualRefiner):
    """Residual, normalised U-Net; input sides must be multiples of :attr:`stride`.

    Takes the U-Net's ``model`` keys (``base_channels``, ``depth``, ``edit_margin``,
    ``colour_prior``, ``prior_gate``, ``global_context``) plus ``blocks`` (residual blocks
    per level) and ``colour_field`` (a per-pixel colour map on top of the start image)."""

    def __init__(
        self,
        base_channels: int = 24,
        depth: int = 3,
        edit_margin: int = -1,
        colour_prior: str = "none",
        prior_gate: bool = True,
        global_context: bool = True,
        blocks: int = 1,
        colour_field: bool = False,
    ) -> None:
        super().__init__(base_channels, depth, edit_margin, colour_prior)
        widths = self.widths
        self.down = nn.ModuleList(
            residual_level(widths[i], widths[i + 1], blocks, stride=2) for i in range(depth)
        )
        self.fuse = nn.ModuleList(
            residual_level(widths[i + 1] + widths[i], widths[i], blocks, stride=1)
            for i in reversed(range(depth))
        )
        self.out_norm = ReadOut(widths[0])
        self._add_head(prior_gate, 2 * widths[0], HEAD_STD)
        self.context = GlobalContext(widths[-1]) if global_context else None
        # Near zero rather than zero, like the head: an exactly zero output layer gives the
        # layers before it no gradient at all until it has grown.
        if self.context is not None:
            nn.init.normal_(self.context.mlp[-1].weight, std=CONTEXT_STD)
        self.field = ColourField(widths[-1]) if colour_field else None

    def forward(
        self, composite: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``prior``: the colour prior's image, when computed outside (tiled inference)."""
        x, skips, base = self._encode(composite, mask, prior)
        if self.context is not None:
            x = self.context(x, mask)
        bottleneck = x
        x = self.out_norm(decode(self.fuse, self.up, x, skips))
        base = self._start(x, composite, base)
        if self.field is not None:
            base = self.field(bottleneck, mask, base)
        return apply_correction(base, mask, self.head(x), self.edit_margin)
