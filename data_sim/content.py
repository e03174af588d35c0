"""Content discontinuity (docs/method.md §5.3): structures break along the edit's edge.

An inpainter conditions its fill on the pixels around the region it is given. Here the edit
mask is widened by a random radius, the widened region is filled from what lies outside it
(:mod:`data_sim.fill`), and the original is pasted back outside the edit mask: the fill is
seamless at the widened boundary and therefore mismatched at the original one, where image
structures crossing the boundary now break.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from data_sim.errors import SimConfigError
from data_sim.family import Params, PlannedFamily
from data_sim.fill import jacobi_smooth, push_pull_fill
from data_sim.noise import grain
from data_sim.sampling import applied_indices, check_range
from data_sim.transfer import to_device
from imageops.morphology import grow_distance, widen_mask

__all__ = [
    "ContentDiscontinuityConfig",
    "ContentFamily",
    "apply_content_discontinuity",
    "sample_content_params",
]

FILL_METHODS = ("push_pull", "diffusion")


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
    band_px: None (as the paper describes it: the fill replaces the whole mask interior) or
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
        if self.method not in FILL_METHODS:
            raise SimConfigError(
                f"sim.content.method={self.method!r} is not push_pull or diffusion"
            )
        if self.diffusion_iterations < 0:
            raise SimConfigError("sim.content.diffusion_iterations must be >= 0")


def sample_content_params(
    batch_size: int, cfg: ContentDiscontinuityConfig, generator: torch.Generator
) -> Params:
    """Draw per-sample parameters on CPU; every entry has leading dimension ``batch_size``.

    Keys: ``applied`` bool; ``widen_px`` float radius; ``max_widen_px`` int64 (the config's
    upper bound, repeated: it fixes the number of dilation steps); ``diffusion_iterations``
    int64 (0 = plain push-pull); ``noise_std``, ``noise_sigma`` float; ``noise_seed`` int64
    (seeds a coordinate hash, so the grain is reproducible on any device without knowing the
    image size at sampling time); ``band_px`` float (0 = fill the whole mask interior) and
    ``max_band_px`` int64 (growth steps for the band's distance map).
    """
    if cfg.method not in FILL_METHODS:
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


def plan_content(params: Params) -> dict | None:
    """The CPU-side part of :func:`apply_content_discontinuity`: the applied samples, their
    parameters, and the loop bounds read from them (None: no sample is applied)."""
    idx = applied_indices(params)
    if not idx.numel():
        return None
    sub = {k: v.cpu()[idx] for k, v in params.items()}
    return {
        "idx": idx,
        "sub": sub,
        "widen_steps": int(sub["max_widen_px"].max()),
        "diffusion_iterations": int(sub["diffusion_iterations"].max()),
        # No band anywhere: the whole mask interior is filled.
        "band_steps": int(sub["max_band_px"].max()) if bool((sub["band_px"] > 0).any()) else 0,
    }


@torch.no_grad()
def run_content(
    images: torch.Tensor, mask: torch.Tensor, plan: dict | None, *, inplace: bool = False
) -> torch.Tensor:
    """The device part of :func:`apply_content_discontinuity` (``plan`` from
    :func:`plan_content`, on the images' device): no host read."""
    out = images if inplace else images.clone()
    if plan is None:
        return out
    idx = plan["idx"]
    x = images[idx]
    m = (mask[idx] > 0.5).to(images.dtype)
    filled = _band_blend(x, _fill(x, m, plan), m, plan)
    out[idx] = torch.where(m > 0.5, filled, x)
    return out


@torch.no_grad()
def apply_content_discontinuity(
    images: torch.Tensor, mask: torch.Tensor, params: Params, *, inplace: bool = False
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
        inplace: write into ``images`` instead of a copy (see :mod:`data_sim.family`).
    """
    plan = to_device(plan_content(params), images.device)
    return run_content(images, mask, plan, inplace=inplace)


def _fill(x: torch.Tensor, m: torch.Tensor, plan: dict) -> torch.Tensor:
    """The widened mask filled from outside it, with the sample's grain, in [0, 1]."""
    sub = plan["sub"]
    wide = widen_mask(m, sub["widen_px"], plan["widen_steps"])
    filled = push_pull_fill(x, wide)
    n_iter = plan["diffusion_iterations"]
    if n_iter > 0:
        smooth = jacobi_smooth(filled, x, wide, n_iter)
        filled = torch.where(sub["diffusion_iterations"].view(-1, 1, 1, 1) > 0, smooth, filled)
    _, _, h, w = x.shape
    noise = grain(sub["noise_seed"], sub["noise_sigma"], h, w, x.dtype)
    std = sub["noise_std"].to(x.dtype).view(-1, 1, 1, 1)
    return (filled + std * noise).clamp(0.0, 1.0)


def _band_blend(x: torch.Tensor, filled: torch.Tensor, m: torch.Tensor, plan: dict) -> torch.Tensor:
    """``filled`` in an inner band along the mask's edge (``band_px`` wide), the original
    ``x`` deeper inside; the whole fill where ``band_px`` is 0."""
    n_band = plan["band_steps"]
    if n_band == 0:
        return filled
    band = plan["sub"]["band_px"].to(x.dtype).view(-1, 1, 1, 1)
    # Distance inside the mask to its boundary (1 = first inner pixel); fill at full
    # strength up to half the band, ramping to the original at the band's inner edge.
    depth = grow_distance(1.0 - m, n_band)
    alpha = ((band - depth) / (0.5 * band).clamp_min(1e-6)).clamp(0.0, 1.0)
    alpha = torch.where(band > 0, alpha, torch.ones_like(alpha))
    return x + alpha * (filled - x)


class ContentFamily(PlannedFamily[ContentDiscontinuityConfig]):
    key = "content"

    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params:
        return sample_content_params(batch_size, self.cfg, generator)

    def plan(self, params: Params, height: int, width: int) -> dict | None:
        return plan_content(params)

    def run(
        self, images: torch.Tensor, params: Params, plan: dict | None, mask: torch.Tensor, *,
        inplace: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        return run_content(images, mask, plan, inplace=inplace)

    @classmethod
    def describe(cls, params: Params, index: int) -> str:
        return f"content widen {float(params['widen_px'][index]):.0f}px"
