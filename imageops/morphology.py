"""Binary morphology and distances on batched masks (B, 1, H, W), shared by the simulation
(data_sim) and by pixperfect (the metrics' boundary band, the colour prior's rings, the
baselines).

Everywhere here the image border neither adds nor removes mask: pixels outside the image
are never mask and never "not mask", so a mask touching the border is not eroded from it
and nothing grows in from outside.

Three mechanisms, each for a reason:

* :func:`max_filter` (grey dilation) and :func:`dilate` / :func:`erode` on it: square, one
  radius for the batch, one max-pool call (fast on a GPU, where the model, the losses and
  the metrics use it).
* :func:`grow_distance` (and :func:`widen_mask` on it): the octagonal distance in whole
  growth steps, by alternating 3x3 square and cross dilations of a bool map, for per-sample
  radii from one map; shifted in-place ORs, since CPU max-pooling of one-channel maps is
  ~20x slower.
* :func:`squared_distance` (and :func:`plan_grow` / :func:`run_grow` on it): the exact
  squared Euclidean distance within a reach, for disc-shaped per-sample dilation and erosion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square grey dilation of a float (B, C, H, W) map: the max over a (2r+1)^2 window
    (a soft mask stays soft)."""
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of a bool (B, 1, H, W) mask by ``radius`` px."""
    return max_filter(mask.float(), radius) > 0.5


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square erosion of a bool (B, 1, H, W) mask by ``radius`` px."""
    return ~dilate(~mask, radius)


def _grow_square(g: torch.Tensor) -> torch.Tensor:
    """One step of 3x3 square dilation of a bool tensor (separable)."""
    h = g.clone()
    h[..., :, 1:] |= g[..., :, :-1]
    h[..., :, :-1] |= g[..., :, 1:]
    v = h.clone()
    v[..., 1:, :] |= h[..., :-1, :]
    v[..., :-1, :] |= h[..., 1:, :]
    return v


def _grow_cross(g: torch.Tensor) -> torch.Tensor:
    """One step of 3x3 cross (4-neighbour) dilation of a bool tensor."""
    c = g.clone()
    c[..., 1:, :] |= g[..., :-1, :]
    c[..., :-1, :] |= g[..., 1:, :]
    c[..., :, 1:] |= g[..., :, :-1]
    c[..., :, :-1] |= g[..., :, 1:]
    return c


def grow_distance(mask: torch.Tensor, max_steps: int) -> torch.Tensor:
    """Octagonal distance (in steps) from each pixel to ``mask``, capped at ``max_steps + 1``,
    in the mask's dtype.

    Grows the mask one pixel per step, alternating a 3x3 square and a 3x3 cross; the distance
    is the number of steps a pixel stays uncovered. The octagonal metric is within ~8% of
    Euclidean, enough to make per-sample disc-like dilations by thresholding one map (no
    per-sample kernels).
    """
    grown = mask > 0.5
    # int16 accumulator: counts stay tiny, and in-place adds of bools avoid float copies.
    dist = (~grown).to(torch.int16)
    for step in range(1, max_steps + 1):
        grown = _grow_square(grown) if step % 2 == 1 else _grow_cross(grown)
        dist += ~grown
    return dist.to(mask.dtype)


@torch.no_grad()
def widen_mask(mask: torch.Tensor, radius: torch.Tensor, max_radius: int) -> torch.Tensor:
    """Dilate each sample's mask by its own radius (pixels), batched, near-disc shaped.

    Thresholds one octagonal distance map (:func:`grow_distance`) per sample. ``max_radius``
    bounds the number of growth steps (a small fixed loop); radii above it are clipped.

    Args:
        mask: ``(B, 1, H, W)`` in {0, 1}.
        radius: ``(B,)`` dilation radius in pixels (float ok).
        max_radius: upper bound on the radius, i.e. number of growth steps.
    """
    dist = grow_distance(mask, max_radius)
    r = radius.to(device=mask.device, dtype=mask.dtype).clamp_max(max_radius)
    return (dist <= r.view(-1, 1, 1, 1)).to(mask.dtype)


def squared_distance(source: torch.Tensor, reach: int) -> torch.Tensor:
    """Exact squared Euclidean distance from each pixel to the nearest ``source`` pixel (a bool
    tensor), computed only up to ``reach`` pixels (beyond: a value above ``reach**2``).

    Separable lower envelope over a (2 reach + 1)^2 window: a min over column offsets, then
    over row offsets, 4 * reach shifted minima in all, into reused integer buffers.
    """
    far = 2 * reach * reach + 1
    # Small integers (at most far + reach**2 mid-pass): uint8 when they fit moves a quarter
    # of the bytes of float32.
    dtype = torch.uint8 if far + reach * reach <= 255 else torch.int32
    d = torch.where(source, 0, far).to(dtype)
    tmp = torch.empty_like(d)
    for dim in (-1, -2):
        n = d.shape[dim]
        padded = F.pad(d, (reach, reach, 0, 0) if dim == -1 else (0, 0, reach, reach), value=far)
        for off in range(1, reach + 1):
            for start in (reach - off, reach + off):
                torch.add(padded.narrow(dim, start, n), off * off, out=tmp)
                torch.minimum(d, tmp, out=d)
    return d


def plan_grow(radius: torch.Tensor) -> dict:
    """The host part of a disc-shaped per-sample dilation (radius > 0) or erosion (radius < 0):
    the reach (a loop bound, read on the host) and the per-sample squared radii and erosion
    flags, for one copy to the device."""
    radius = radius.float().cpu()
    # Erosion needs depths up to twice its radius to apply the cap.
    reach = max(1, math.ceil(float(radius.max())), 2 * math.ceil(float(-radius.min())))
    return {
        "reach": reach,
        "r2": (radius * radius).view(-1, 1, 1, 1),
        "eroding": (radius < 0).view(-1, 1, 1, 1),
    }


def run_grow(mask: torch.Tensor, plan: dict) -> torch.Tensor:
    """The device part of the grow that :func:`plan_grow` planned (``plan`` on the mask's
    device): no host read. Erosion is capped at half the mask's thickness, so a thin stroke is
    thinned, never erased."""
    r2, eroding = plan["r2"], plan["eroding"]
    inside = mask > 0.5
    # Distance to the mask (dilation) or to its outside (erosion), squared, whole pixels.
    d2 = squared_distance(inside ^ eroding, plan["reach"])
    depth2 = torch.where(inside, d2, 0).amax(dim=(1, 2, 3), keepdim=True)
    limit = torch.where(eroding, torch.minimum(r2, depth2 / 4), r2).floor()
    near = d2 <= limit.clamp_max(torch.iinfo(d2.dtype).max).to(d2.dtype)
    # Dilation: everything near the mask (the mask included). Erosion: what is not near the
    # outside (the outside included).
    return (near ^ eroding).to(mask.dtype)
