"""Classical hole filling, batched on the images' device: the inpainter of the content family.

An editor's inpainter fills a region from what surrounds it. These stand in for it: they
run batched on whatever device the images live on (torch ops only, no loop over samples, no
gradients), and give back known pixels bit-exactly.

* :func:`push_pull_fill`: a push-pull pyramid (normalised convolution), smooth and fast;
* :func:`diffusion_fill`: push-pull, then Jacobi sweeps towards the harmonic (membrane) fill;
* :func:`fill`: either, by name.

Images are float ``(B, C, H, W)``; holes ``(B, 1, H, W)`` with 1 = pixel to fill.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["NO_DATA_FILL", "diffusion_fill", "fill", "jacobi_smooth", "push_pull_fill"]

# Value used where a sample has no known pixel at all (hole covers the whole image): there is
# nothing to propagate, and the hole's own content must not leak in, so we fall back to grey.
NO_DATA_FILL = 0.5


def _pull_padding(h: int, w: int) -> tuple[int, int, int, int]:
    """F.pad spec (1, 1 + odd) per axis: maps every size n >= 1 to ceil(n / 2) in ``_pull``."""
    return (1, 1 + w % 2, 1, 1 + h % 2)


def _pull(x: torch.Tensor, padded: bool = False) -> torch.Tensor:
    """Blur-and-subsample by 2 with zero padding; output size is ceil(H/2) x ceil(W/2).

    Separable [1, 3, 3, 1] / 8 taps at stride 2. With the ``_pull_padding`` zero padding
    (already applied if ``padded``), coarse pixel ``i`` is centred on fine coordinate
    ``2i + 0.5``, the bilinear-2x convention used by ``_push``. Zero padding means "no data";
    the caller renormalises by kernel coverage. Written as strided slices and in-place adds:
    a grouped strided conv2d is ~3x slower on CPU for this memory-bound filter.
    """
    if not padded:
        x = F.pad(x, _pull_padding(x.shape[-2], x.shape[-1]))
    # Rows first: slicing every other row keeps rows contiguous, so it vectorises best and
    # halves the data before the (slower) every-other-column pass.
    a, b = x[..., 0::2, :], x[..., 1::2, :]
    y = a[..., :-1, :] + b[..., 1:, :]
    y.add_(b[..., :-1, :] + a[..., 1:, :], alpha=3.0)
    a, b = y[..., 0::2], y[..., 1::2]
    z = a[..., :-1] + b[..., 1:]
    z.add_(b[..., :-1] + a[..., 1:], alpha=3.0)
    return z.mul_(1.0 / 64.0)


def _push(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample by exactly 2 (bilinear) and crop, keeping the pull's pixel-centre alignment."""
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return up[..., : size[0], : size[1]]


@torch.no_grad()
def push_pull_fill(
    images: torch.Tensor, hole: torch.Tensor, levels: int | None = None
) -> torch.Tensor:
    """Fill ``hole == 1`` pixels from known pixels with a push-pull pyramid (normalised conv).

    Pull: at each level, colour premultiplied by a confidence weight and the weight itself are
    blurred and subsampled by 2; both are renormalised by the kernel coverage so image borders
    do not look like missing data. Push: coarse-to-fine, each level keeps its own (weighted)
    estimate and takes the rest, ``1 - weight``, from the upsampled coarser level. Known
    pixels have weight 1 at level 0, so they come back exactly; holes get a smooth blend.

    Args:
        images: ``(B, C, H, W)`` float images; any H, W >= 1.
        hole: ``(B, 1, H, W)`` mask (shared by all channels), 1 = pixel to fill. Any shape
            of hole, including ones touching the border.
        levels: number of pull steps. ``None`` builds the full pyramid down to 1x1, so any
            hole with at least one known pixel in the sample gets filled from data.

    Returns:
        Tensor like ``images``; equal to ``images`` bit-exactly where ``hole == 0``. If a
        sample has no known pixel (hole covers the whole image), or ``levels`` is too small
        to reach data, the unreachable part is filled with ``NO_DATA_FILL`` (0.5 grey) rather
        than the hole's own content, and never with NaN.
    """
    if images.ndim != 4 or hole.ndim != 4:
        raise ValueError("images and hole must be 4-D (B, C, H, W)")
    b, c, h, w = images.shape
    if hole.shape[1] != 1:
        raise ValueError(f"hole must have one channel, got shape {tuple(hole.shape)}")
    hole_b = (hole > 0.5).expand(b, c, h, w)
    known = (~hole_b[:, :1]).to(images.dtype)
    if levels is None:
        levels = max(0, math.ceil(math.log2(max(h, w))))

    # Level 0: premultiplied colour and confidence, stacked so each pull is one pass, and
    # written straight into the zero-padded buffer the first pull needs (saves two full-size
    # copies, which matter on CPU where this is memory-bound).
    pad = _pull_padding(h, w)
    level = images.new_zeros(b, c + 1, h + pad[2] + pad[3], w + pad[0] + pad[1])
    inner = level[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]
    torch.mul(images, known, out=inner[:, :c])
    inner[:, c:] = known
    pyramid = []
    ones = torch.ones(1, 1, h, w, dtype=images.dtype, device=images.device)
    for i in range(levels):
        coverage = _pull(ones)
        # Renormalise by kernel coverage so zero padding at the image border reads as "outside
        # the image", not "missing data": fully known border pixels keep weight 1.
        level = _pull(level, padded=i == 0).div_(coverage)
        ones = torch.ones_like(coverage)
        pyramid.append(level)

    if not pyramid:  # levels == 0: nothing to pull from; only a no-data fill is possible
        return torch.where(hole_b, torch.full_like(images, NO_DATA_FILL), images)

    coarse = pyramid.pop()
    weight = coarse[:, c:]
    estimate = torch.where(
        weight > 1e-8,
        coarse[:, :c] / weight.clamp_min(1e-8),
        torch.full_like(coarse[:, :c], NO_DATA_FILL),
    )
    for level in reversed(pyramid):
        up = _push(estimate, (level.shape[-2], level.shape[-1]))
        # Own weighted estimate where this level has data, the coarser estimate for the rest.
        estimate = torch.addcmul(level[:, :c], 1.0 - level[:, c:], up)
    # Level 0 has weight 1 on known pixels and 0 in the hole, so its blend is a plain select,
    # which also makes known pixels bit-exact.
    return torch.where(hole_b, _push(estimate, (h, w)), images)


@torch.no_grad()
def diffusion_fill(images: torch.Tensor, hole: torch.Tensor, iterations: int = 64) -> torch.Tensor:
    """Harmonic (Laplace) fill: push-pull initialisation, then Jacobi smoothing inside the hole.

    Push-pull provides the low frequencies, so a few dozen Jacobi sweeps suffice to remove its
    piecewise-bilinear structure; the result tends to the membrane interpolant (linear ramps
    are reproduced exactly away from image borders). Borders use replicate padding (Neumann).
    Same guarantees as ``push_pull_fill``: exact outside the hole, no NaN.
    """
    return jacobi_smooth(push_pull_fill(images, hole), images, hole, iterations)


def jacobi_smooth(
    init: torch.Tensor, images: torch.Tensor, hole: torch.Tensor, iterations: int
) -> torch.Tensor:
    """Jacobi sweeps of the 4-neighbour Laplace equation inside ``hole``; known pixels fixed."""
    hole_b = (hole > 0.5).expand_as(images)
    out = init
    for _ in range(iterations):
        # 4-neighbour mean via shifted slices of a replicate-padded copy (Neumann border).
        # Plain slicing: kornia.filter2d's per-call overhead dominates for small images in
        # this loop.
        p = F.pad(out, (1, 1, 1, 1), mode="replicate")
        nbr = (p[..., :-2, 1:-1] + p[..., 2:, 1:-1]) + (p[..., 1:-1, :-2] + p[..., 1:-1, 2:])
        out = torch.where(hole_b, 0.25 * nbr, images)
    return out


def fill(
    images: torch.Tensor, hole: torch.Tensor, method: str = "push_pull", **kwargs: int
) -> torch.Tensor:
    """Dispatch to ``push_pull_fill`` (``method="push_pull"``) or ``diffusion_fill``."""
    if method == "push_pull":
        return push_pull_fill(images, hole, **kwargs)
    if method == "diffusion":
        return diffusion_fill(images, hole, **kwargs)
    raise ValueError(f"unknown fill method {method!r}; expected 'push_pull' or 'diffusion'")
