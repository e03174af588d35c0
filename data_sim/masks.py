"""Edit masks and compositing alphas.

The *edit mask* is the binary region a user asked the editor to change; the refiner sees
it. The *compositing alpha* is how the editor pasted its output back over the original:
hard (alpha == mask) or feathered (a per-sample Gaussian blur of the mask), so seams are
sometimes abrupt and sometimes soft.

Masks are free-form strokes (thick polylines, as drawn by users of inpainting tools) or
boxes, chosen per sample. Geometry is drawn on the CPU; rasterisation is batched on the
images' device: a coverage field ``half_width - distance`` is computed on a grid of at most
``raster_size`` pixels a side, upsampled bilinearly and thresholded, which keeps edges smooth
and the cost independent of the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from data_sim.sampling import bernoulli, check_range, randint, uniform


@dataclass
class MaskConfig:
    """Random edit masks. Lengths are fractions of the image's shorter side."""

    box_prob: float = 0.3  # else free-form strokes
    strokes: tuple[int, int] = (1, 4)  # strokes per mask
    vertices: tuple[int, int] = (2, 6)  # segments per stroke
    stroke_width: tuple[float, float] = (0.04, 0.14)
    segment_length: tuple[float, float] = (0.08, 0.25)
    max_turn_deg: float = 60.0  # direction change between consecutive segments
    box_size: tuple[float, float] = (0.2, 0.55)  # box side as a fraction of that image side
    raster_size: int = 256  # coverage grid resolution cap (speed, not quality)

    def validate(self) -> None:
        check_range("sim.mask.box_prob", (self.box_prob, self.box_prob), 0, 1)
        check_range("sim.mask.strokes", self.strokes, 1, 64)
        check_range("sim.mask.vertices", self.vertices, 1, 64)
        check_range("sim.mask.stroke_width", self.stroke_width, 1e-3, 1)
        check_range("sim.mask.segment_length", self.segment_length, 0, 2)
        check_range("sim.mask.box_size", self.box_size, 1e-3, 1)


@dataclass
class BoundaryConfig:
    """How the edited region is pasted back: hard or feathered."""

    hard_prob: float = 0.3
    feather_sigma: tuple[float, float] = (0.8, 4.0)  # Gaussian sigma in pixels

    def validate(self) -> None:
        check_range("sim.boundary.hard_prob", (self.hard_prob, self.hard_prob), 0, 1)
        check_range("sim.boundary.feather_sigma", self.feather_sigma, 0.1, 64)


def sample_mask_params(
    batch_size: int, height: int, width: int, cfg: MaskConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw per-sample mask geometry, in units of the shorter image side."""
    b, s_max, v_max = batch_size, cfg.strokes[1], cfg.vertices[1]
    extent = torch.tensor([width, height], dtype=torch.float32) / min(height, width)

    n_strokes = randint(generator, b, *cfg.strokes)
    n_segments = torch.stack(
        [randint(generator, b, *cfg.vertices) for _ in range(s_max)], dim=1
    )  # (B, S)
    stroke_active = torch.arange(s_max)[None] < n_strokes[:, None]
    segment_active = (torch.arange(v_max)[None, None] < n_segments[..., None]) & stroke_active[
        ..., None
    ]  # (B, S, V)

    start = uniform(generator, b, 0, 1, s_max, 2) * extent
    heading = uniform(generator, b, 0, 2 * math.pi, s_max, 1)
    turn = uniform(generator, b, -1, 1, s_max, v_max) * math.radians(cfg.max_turn_deg)
    angle = heading + torch.cumsum(turn, dim=-1)
    length = uniform(generator, b, *cfg.segment_length, s_max, v_max)
    steps = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * length[..., None]
    vertices = torch.cat([start[:, :, None], start[:, :, None] + steps.cumsum(dim=2)], dim=2)

    return {
        "is_box": bernoulli(generator, b, cfg.box_prob),
        "vertices": vertices,  # (B, S, V+1, 2) xy
        "segment_active": segment_active,
        "stroke_width": uniform(generator, b, *cfg.stroke_width, s_max),
        "box_center": uniform(generator, b, 0.15, 0.85, 2) * extent,
        "box_size": uniform(generator, b, *cfg.box_size, 2) * extent,
    }


def _segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from ``points`` (H, W, 2) to segments ``a``-``b`` (B, 2) -> (B, H, W)."""
    ab = (b - a)[:, None, None]
    ap = points[None] - a[:, None, None]
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (ap - t[..., None] * ab).norm(dim=-1)


def rasterize_masks(
    params: dict[str, torch.Tensor],
    height: int,
    width: int,
    device: torch.device,
    raster_size: int = 256,
) -> torch.Tensor:
    """Binary masks (B, 1, H, W) float32 from :func:`sample_mask_params` output."""
    p = {k: v.to(device) for k, v in params.items()}
    unit = min(height, width)
    scale = min(1.0, raster_size / unit)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (height / h) / unit
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (width / w) / unit
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) xy

    b, s_max, n_vert, _ = p["vertices"].shape
    coverage = torch.full((b, h, w), -1e3, device=device)
    for s in range(s_max):
        half = p["stroke_width"][:, s, None, None] / 2
        for v in range(n_vert - 1):
            d = _segment_distance(grid, p["vertices"][:, s, v], p["vertices"][:, s, v + 1])
            active = p["segment_active"][:, s, v, None, None]
            coverage = torch.where(active, torch.maximum(coverage, half - d), coverage)

    offset = (grid[None] - p["box_center"][:, None, None]).abs()
    box_cov = (p["box_size"][:, None, None] / 2 - offset).min(dim=-1).values
    coverage = torch.where(p["is_box"][:, None, None], box_cov, coverage)

    coverage = F.interpolate(coverage[:, None], size=(height, width), mode="bilinear")
    return (coverage > 0).float()


def sample_boundary_params(
    batch_size: int, cfg: BoundaryConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    return {
        "hard": bernoulli(generator, batch_size, cfg.hard_prob),
        "feather_sigma": uniform(generator, batch_size, *cfg.feather_sigma),
    }


def compositing_alpha(mask: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hard or feathered alpha (B, 1, H, W) in [0, 1] from a binary mask."""
    hard = params["hard"].to(mask.device)
    sigma = params["feather_sigma"].to(mask.device)
    radius = math.ceil(3 * float(sigma.max()))
    size = 2 * radius + 1
    blurred = kornia.filters.gaussian_blur2d(
        mask, (size, size), torch.stack([sigma, sigma], dim=1), border_type="replicate"
    )
    # Blur tails below 1/512 would be invisible yet make "untouched" pixels differ.
    blurred = torch.where(blurred < 1 / 512, torch.zeros_like(blurred), blurred)
    return torch.where(hard[:, None, None, None], mask, blurred)
