"""Smooth random weight fields: linear gradients plus soft radial blobs.

Editors shift colour unevenly across a region (stronger on one side, in a patch), so the
colour family blends its jittered image through one of these fields rather than a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data_sim.errors import SimConfigError
from data_sim.sampling import check_range, uniform


@dataclass
class FieldConfig:
    """A field w(x, y) = clamp(base + gradient + blobs, 0, 1). Lengths in units of the
    shorter image side."""

    base: tuple[float, float] = (0.4, 1.0)
    gradient: tuple[float, float] = (0.0, 1.2)  # slope magnitude per unit length
    blobs: int = 2  # blobs per field (each may be positive or negative)
    blob_amplitude: tuple[float, float] = (-0.6, 0.6)
    blob_radius: tuple[float, float] = (0.1, 0.5)

    def validate(self, prefix: str) -> None:
        check_range(f"{prefix}.base", self.base, 0, 1)
        check_range(f"{prefix}.gradient", self.gradient, 0, 100)
        check_range(f"{prefix}.blob_amplitude", self.blob_amplitude, -1, 1)
        check_range(f"{prefix}.blob_radius", self.blob_radius, 1e-3, 10)
        if self.blobs < 0:
            raise SimConfigError(f"{prefix}.blobs={self.blobs} must be >= 0")


def sample_field_params(
    batch_size: int, height: int, width: int, cfg: FieldConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    b, k = batch_size, cfg.blobs
    extent = torch.tensor([width, height], dtype=torch.float32) / min(height, width)
    direction = uniform(generator, b, 0, 2 * math.pi)
    return {
        "base": uniform(generator, b, *cfg.base),
        "slope": uniform(generator, b, *cfg.gradient),
        "direction": torch.stack([direction.cos(), direction.sin()], dim=1),
        "blob_center": uniform(generator, b, 0, 1, k, 2) * extent,
        "blob_amplitude": uniform(generator, b, *cfg.blob_amplitude, k),
        "blob_radius": uniform(generator, b, *cfg.blob_radius, k),
    }


def render_field(
    params: dict[str, torch.Tensor],
    height: int,
    width: int,
    device: torch.device,
    step: int = 1,
) -> torch.Tensor:
    """The field (B, 1, H, W) in [0, 1]. ``step > 1`` evaluates it every ``step`` pixels and
    upsamples bilinearly: the field is smooth, so this is nearly exact and far cheaper."""
    p = {k: v.to(device) for k, v in params.items()}
    unit = min(height, width)
    gh, gw = max(1, math.ceil(height / step)), max(1, math.ceil(width / step))
    # Centres of the coarse cells in image units, so the upsampled field lines up.
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) * (height / gh) / unit
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) * (width / gw) / unit
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)
    centre = grid.mean(dim=(0, 1))

    along = ((grid - centre)[None] * p["direction"][:, None, None]).sum(-1)  # (B, H, W)
    field = p["base"][:, None, None] + p["slope"][:, None, None] * along
    d2 = ((grid[None, None] - p["blob_center"][:, :, None, None]) ** 2).sum(-1)  # (B, K, H, W)
    blobs = p["blob_amplitude"][..., None, None] * torch.exp(
        -d2 / (2 * p["blob_radius"][..., None, None] ** 2)
    )
    field = (field + blobs.sum(dim=1)).clamp(0, 1)[:, None]
    if (gh, gw) != (height, width):
        field = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=False)
    return field
