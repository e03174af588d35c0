"""Running the network on inputs of any size: overlapping tiles (padded to its stride with
imageops.padding) blended with smooth weights when a crop is too large to refine in one piece.

Tiles are at most ``tile`` px a side, a multiple of the stride, and placed on the stride
grid, so every tile sees the same downsampling phase as the whole crop would. Each side is
split into the fewest tiles that fit, made as small as that count allows (a 1424 px crop
with tiles of 1024 and 128 px overlap gets two 776 px tiles a side, not two of 1024: 43%
less work). Neighbouring tiles overlap by at least ``overlap`` px. In an overlap each
tile's weight is near zero on the quarter of it next to the tile's own edge (where the tile
saw padding instead of the real neighbourhood), rises along a cosine over the middle half
and is 1 beyond; the outputs are averaged with these weights, normalised by their sum.
The weights are positive and continuous, so no tile edge shows in the result. Edges on the
crop border get no ramp.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (image, mask) -> image

_FLOOR = 1e-3  # the smallest tile weight: keeps the normalisation defined everywhere


def tile_length(length: int, tile: int, overlap: int, stride: int = 1) -> int:
    """The side of the tiles covering ``length`` px: the fewest tiles of at most ``tile`` px
    that overlap by ``overlap``, each as short as that count allows (a multiple of
    ``stride`` when ``tile`` is)."""
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    return min(tile, math.ceil((length + (n - 1) * overlap) / n / stride) * stride)


def tile_starts(length: int, tile: int, overlap: int, stride: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px with at least ``overlap``
    px shared by neighbours; multiples of ``stride`` when ``length`` and ``tile`` are."""
    if length <= tile:
        return [0]
    step = max(stride, (tile - overlap) // stride * stride)
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def edge_ramp(length: int, overlap: int, lead: bool, trail: bool) -> torch.Tensor:
    """1-D tile weights of ``length`` px: 1 in the middle, falling towards a leading and/or
    trailing edge over ``overlap`` px (see the module docstring for the shape)."""
    weights = torch.ones(length)
    if overlap <= 0:
        return weights
    k = torch.arange(overlap, dtype=torch.float32) + 0.5  # distance from the edge
    t = ((k - overlap / 4) / (overlap / 2)).clamp(0, 1)
    ramp = (0.5 - 0.5 * torch.cos(math.pi * t)).clamp_min(_FLOOR)
    n = min(overlap, length)
    if lead:
        weights[:n] = torch.minimum(weights[:n], ramp[:n])
    if trail:
        weights[length - n :] = torch.minimum(weights[length - n :], ramp[:n].flip(0))
    return weights


def run_tiled(
    network: Network,
    image: torch.Tensor,
    mask: torch.Tensor,
    tile: int,
    overlap: int,
    stride: int = 1,
) -> torch.Tensor:
    """``network(image, mask)`` for (1, C, H, W) inputs whose sides are multiples of
    ``stride``, in overlapping tiles when a side exceeds ``tile``; in one call otherwise."""
    h, w = image.shape[-2:]
    tile = max(stride, tile // stride * stride)
    if h <= tile and w <= tile:
        return network(image, mask)
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"tile overlap {overlap} must be between 0 and half the tile ({tile})")
    th, tw = tile_length(h, tile, overlap, stride), tile_length(w, tile, overlap, stride)
    ys, xs = tile_starts(h, th, overlap, stride), tile_starts(w, tw, overlap, stride)
    out = torch.zeros(1, 3, h, w, device=image.device, dtype=torch.float32)
    total = torch.zeros(1, 1, h, w, device=image.device, dtype=torch.float32)
    for y in ys:
        wy = edge_ramp(th, overlap, lead=y > 0, trail=y + th < h)
        for x in xs:
            wx = edge_ramp(tw, overlap, lead=x > 0, trail=x + tw < w)
            weight = (wy[:, None] * wx[None, :]).to(image.device)
            region = (..., slice(y, y + th), slice(x, x + tw))
            refined = network(image[region], mask[region]).float()
            out[region] += refined * weight
            total[region] += weight
    return out / total
