"""Classical batched inpainting and the content-discontinuity artifact family (METHOD 5.3).

This module owns:

* ``push_pull_fill`` / ``diffusion_fill`` / ``fill``: hole filling from known pixels that runs
  batched on whatever device the images live on (pure torch/kornia ops, no Python loop over
  samples, no gradients). They stand in for the unspecified "inpainter" of METHOD 5.3.
* ``ContentDiscontinuityConfig`` / ``sample_content_params`` / ``apply_content_discontinuity``:
  widen the edit mask, inpaint the widened region, paste the original back outside the
  original mask, which leaves broken structures along the original mask boundary.

Conventions (shared by all of ``data_sim``): images are float32 ``(B, 3, H, W)`` in [0, 1],
masks float32 ``(B, 1, H, W)`` in {0, 1} with 1 = edited region / hole. Random parameters are
drawn on CPU by ``sample_*_params`` with an explicit generator; ``apply_*`` is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from data_sim.sampling import applied_indices, check_range, hash32

__all__ = [
    "ContentDiscontinuityConfig",
    "apply_content_discontinuity",
    "diffusion_fill",
    "fill",
    "push_pull_fill",
    "sample_content_params",
    "widen_mask",
]

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
    return _jacobi_smooth(push_pull_fill(images, hole), images, hole, iterations)


def _jacobi_smooth(
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


def _dilate_square(g: torch.Tensor) -> torch.Tensor:
    """Binary 3x3 square dilation of a bool tensor (separable; nothing enters from outside)."""
    h = g.clone()
    h[..., :, 1:] |= g[..., :, :-1]
    h[..., :, :-1] |= g[..., :, 1:]
    v = h.clone()
    v[..., 1:, :] |= h[..., :-1, :]
    v[..., :-1, :] |= h[..., 1:, :]
    return v


def _dilate_cross(g: torch.Tensor) -> torch.Tensor:
    """Binary 3x3 cross (4-neighbour) dilation of a bool tensor."""
    c = g.clone()
    c[..., 1:, :] |= g[..., :-1, :]
    c[..., :-1, :] |= g[..., 1:, :]
    c[..., :, 1:] |= g[..., :, :-1]
    c[..., :, :-1] |= g[..., :, 1:]
    return c


def _grow_distance(mask: torch.Tensor, max_steps: int) -> torch.Tensor:
    """Octagonal distance (in steps) from each pixel to ``mask``, capped at ``max_steps + 1``.

    Grows the mask one pixel per step, alternating a 3x3 square and a 3x3 cross; the distance
    is the number of steps a pixel stays uncovered. The octagonal metric is within ~8% of
    Euclidean, which is enough to make per-sample disc-like dilations by thresholding one map
    (no per-sample kernels). Nothing grows in from outside the image, so the image border is
    never "mask". Bool shifts with in-place OR, because CPU max_pool2d on one-channel maps is
    ~20x slower than this.
    """
    grown = mask > 0.5
    # int16 accumulator: counts stay tiny, and in-place adds of bools avoid float copies.
    dist = (~grown).to(torch.int16)
    for step in range(1, max_steps + 1):
        grown = _dilate_square(grown) if step % 2 == 1 else _dilate_cross(grown)
        dist += ~grown
    return dist.to(mask.dtype)


@torch.no_grad()
def widen_mask(mask: torch.Tensor, radius: torch.Tensor, max_radius: int) -> torch.Tensor:
    """Dilate each sample's mask by its own radius (pixels), batched.

    Thresholds one octagonal distance map (see ``_grow_distance``) per sample, which gives a
    near-disc dilation without per-sample kernels. ``max_radius`` bounds the number of growth
    steps (a small fixed loop); radii above it are clipped.

    Args:
        mask: ``(B, 1, H, W)`` in {0, 1}.
        radius: ``(B,)`` dilation radius in pixels (float ok).
        max_radius: upper bound on the radius, i.e. number of growth steps.
    """
    dist = _grow_distance(mask, max_radius)
    r = radius.to(device=mask.device, dtype=mask.dtype).clamp_max(max_radius)
    return (dist <= r.view(-1, 1, 1, 1)).to(mask.dtype)


# ---------------------------------------------------------------------------------------------
# Content discontinuity (METHOD 5.3)
# ---------------------------------------------------------------------------------------------


@dataclass
class ContentDiscontinuityConfig:
    """Ranges for the content-discontinuity family.

    p: probability a sample gets the artifact.
    widen_px: (min, max) mask widening radius in pixels; the fill is seamless at the widened
        boundary and therefore mismatched by roughly this much at the original one.
    method: inpainter, "push_pull" or "diffusion" (push-pull + Jacobi smoothing).
    diffusion_iterations: Jacobi sweeps when ``method == "diffusion"``.
    noise_std: (min, max) std of a fine grain added to the fill so it is not a flat, plastic
        patch (real inpainters synthesise texture); (0, 0) disables it.
    noise_sigma: (min, max) blur of the grain in pixels (clipped to 2); ~0.5-1 looks like
        sensor grain.
    band_px: None (METHOD 5.3 as written: the fill replaces the whole mask interior) or
        (min, max) width in pixels of an inner band along the mask boundary that receives the
        fill; deeper inside, the original is kept, with a soft ramp between the two. With a
        classical inpainter a large mask otherwise becomes one smooth blob whose target (the
        clean photo) the refiner can only hallucinate; the band keeps the artifact at the seam.
    """

    p: float = 0.5
    widen_px: tuple[float, float] = (4.0, 16.0)
    method: str = "push_pull"
    diffusion_iterations: int = 64
    noise_std: tuple[float, float] = (0.0, 0.02)
    noise_sigma: tuple[float, float] = (0.5, 1.0)
    band_px: tuple[float, float] | None = (8.0, 24.0)

    def validate(self) -> None:
        check_range("sim.content.p", (self.p, self.p), 0, 1)
        check_range("sim.content.widen_px", self.widen_px, 0, 256)
        check_range("sim.content.noise_std", self.noise_std, 0, 1)
        check_range("sim.content.noise_sigma", self.noise_sigma, 0, 2)
        if self.band_px is not None:
            check_range("sim.content.band_px", self.band_px, 0, 512)
        if self.method not in ("push_pull", "diffusion"):
            raise ValueError(f"sim.content.method={self.method!r} is not push_pull or diffusion")
        if self.diffusion_iterations < 0:
            raise ValueError("sim.content.diffusion_iterations must be >= 0")


def sample_content_params(
    batch_size: int, cfg: ContentDiscontinuityConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw per-sample parameters on CPU; every entry has leading dimension ``batch_size``.

    Keys: ``applied`` bool; ``widen_px`` float radius; ``max_widen_px`` int64 (the config's
    upper bound, repeated: it fixes the number of dilation steps); ``diffusion_iterations``
    int64 (0 = plain push-pull); ``noise_std``, ``noise_sigma`` float; ``noise_seed`` int64
    (seeds a coordinate hash, so the grain is reproducible on any device without knowing the
    image size at sampling time); ``band_px`` float (0 = fill the whole mask interior) and
    ``max_band_px`` int64 (growth steps for the band's distance map).
    """
    if cfg.method not in ("push_pull", "diffusion"):
        raise ValueError(f"unknown fill method {cfg.method!r}")
    u = torch.rand(batch_size, 5, generator=generator)
    seeds = torch.randint(0, 2**31 - 1, (batch_size,), generator=generator, dtype=torch.int64)

    def lerp(rng: tuple[float, float], t: torch.Tensor) -> torch.Tensor:
        return rng[0] + (rng[1] - rng[0]) * t

    iters = cfg.diffusion_iterations if cfg.method == "diffusion" else 0
    band = cfg.band_px
    max_band = 0 if band is None else math.ceil(band[1])
    return {
        "applied": u[:, 0] < cfg.p,
        "widen_px": lerp(cfg.widen_px, u[:, 1]),
        "max_widen_px": torch.full((batch_size,), math.ceil(cfg.widen_px[1]), dtype=torch.int64),
        "diffusion_iterations": torch.full((batch_size,), iters, dtype=torch.int64),
        "noise_std": lerp(cfg.noise_std, u[:, 2]),
        "noise_sigma": lerp(cfg.noise_sigma, u[:, 3]),
        "noise_seed": seeds,
        "band_px": torch.zeros(batch_size) if band is None else lerp(band, u[:, 4]),
        "max_band_px": torch.full((batch_size,), max_band, dtype=torch.int64),
    }


def _hash_noise(seed: torch.Tensor, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Standard-normal noise ``(B, 1, H, W)`` that is a pure function of (seed, y, x).

    A counter-based hash instead of a torch RNG: batched (no per-sample generators), same
    values on every device, and reproducible from a per-sample integer seed in the params.
    """
    seed = seed.to(device=device, dtype=torch.int64).view(-1, 1, 1)
    ys = torch.arange(height, device=device, dtype=torch.int64).view(1, -1, 1)
    xs = torch.arange(width, device=device, dtype=torch.int64).view(1, 1, -1)
    base = hash32(hash32(seed) + ys * 0x01000193) + xs * 0x27D4EB2F
    base = base.mul_(2)
    u1 = hash32(base + 1).to(torch.float32).add_(0.5).div_(4294967296.0)  # (0, 1): log finite
    u2 = hash32(base.add_(2)).to(torch.float32).mul_(2.0 * math.pi / 4294967296.0)
    z = u1.log_().mul_(-2.0).sqrt_().mul_(u2.cos_())  # Box-Muller
    return z.unsqueeze(1)


# Grain is synthesised on a periodic tile and repeated: the int64 hash at full resolution
# dominated the family's CPU cost, and a 128 px period is invisible in a low-amplitude grain.
_GRAIN_TILE = 128
# Grain blur is capped so one fixed kernel size serves every sample: a sample's output then
# does not depend on which other samples share its batch.
_GRAIN_MAX_SIGMA = 2.0
_GRAIN_KSIZE = 2 * math.ceil(3 * _GRAIN_MAX_SIGMA) + 1


def _grain(
    seed: torch.Tensor, sigma: torch.Tensor, height: int, width: int, dtype: torch.dtype
) -> torch.Tensor:
    """Unit-std grain ``(B, 1, H, W)``: hash noise blurred by per-sample ``sigma``, tiled."""
    device = seed.device
    tile = _hash_noise(seed, _GRAIN_TILE, _GRAIN_TILE, device).to(dtype)
    sigma = sigma.to(dtype).clamp(1e-3, _GRAIN_MAX_SIGMA)
    ksize = _GRAIN_KSIZE
    # Circular border keeps the tile periodic, so the repeats join without seams.
    tile = gaussian_blur2d(tile, ksize, sigma.view(-1, 1).expand(-1, 2), border_type="circular")
    # Blurring white noise scales its std by the kernel's L2 norm, sum(k1d**2) for a separable
    # kernel; divide it out so the grain has unit std whatever sigma is.
    taps = torch.arange(ksize, device=device, dtype=dtype) - ksize // 2
    k1d = torch.exp(-(taps**2) / (2.0 * sigma.view(-1, 1) ** 2))
    k1d = k1d / k1d.sum(dim=1, keepdim=True)
    tile = tile / (k1d**2).sum(dim=1).view(-1, 1, 1, 1)
    reps = (1, 1, -(-height // _GRAIN_TILE), -(-width // _GRAIN_TILE))
    return tile.repeat(*reps)[..., :height, :width]


@torch.no_grad()
def apply_content_discontinuity(
    images: torch.Tensor,
    mask: torch.Tensor,
    params: dict[str, torch.Tensor],
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """Widen mask, inpaint the widened region, paste the original back outside ``mask``.

    The output differs from ``images`` only where ``mask == 1`` (bit-exact elsewhere), and
    samples with ``applied == False`` are returned unchanged bit-exactly. Inside the mask the
    content comes from a fill conditioned only on pixels at least ``widen_px`` away, so image
    structures crossing the mask boundary break there. If the widened region covers the whole
    image the fill is ``NO_DATA_FILL`` grey (plus grain). With ``band_px > 0`` only an inner
    band along the mask boundary is replaced (see ``ContentDiscontinuityConfig``).

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        mask: ``(B, 1, H, W)`` in {0, 1}, 1 = edited region.
        params: from ``sample_content_params`` (any device; moved here).
        inplace: write into ``images`` instead of a copy (see :mod:`data_sim.simulator`).
    """
    device = images.device
    out = images if inplace else images.clone()
    # Work on the applied subset only (a batched gather, not a loop).
    idx = applied_indices(params).to(device)
    if not idx.numel():
        return out
    sub = {k: v.to(device)[idx] for k, v in params.items()}
    x = images[idx]
    m = (mask[idx] > 0.5).to(images.dtype)
    _, _, h, w = x.shape

    wide = widen_mask(m, sub["widen_px"], int(sub["max_widen_px"].max()))
    filled = push_pull_fill(x, wide)
    iters = sub["diffusion_iterations"]
    n_iter = int(iters.max())
    if n_iter > 0:
        smooth = _jacobi_smooth(filled, x, wide, n_iter)
        filled = torch.where(iters.view(-1, 1, 1, 1) > 0, smooth, filled)

    noise = _grain(sub["noise_seed"], sub["noise_sigma"], h, w, x.dtype)
    std = sub["noise_std"].to(x.dtype).view(-1, 1, 1, 1)
    filled = (filled + std * noise).clamp(0.0, 1.0)

    band = sub["band_px"].to(x.dtype).view(-1, 1, 1, 1)
    n_band = int(sub["max_band_px"].max())
    if n_band > 0 and bool((band > 0).any()):
        # Distance inside the mask to its boundary (1 = first inner pixel); fill at full
        # strength up to half the band, ramping to the original at the band's inner edge.
        depth = _grow_distance(1.0 - m, n_band)
        alpha = ((band - depth) / (0.5 * band).clamp_min(1e-6)).clamp(0.0, 1.0)
        alpha = torch.where(band > 0, alpha, torch.ones_like(alpha))
        filled = x + alpha * (filled - x)

    out[idx] = torch.where(m > 0.5, filled, x)
    return out
