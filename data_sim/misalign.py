"""Misalignment artifact family (docs/method.md §5.5): the edited content is slightly displaced.

Each applied sample gets a small similarity transform (shift, rotation and isotropic scale
about ``centre``, which :class:`MisalignFamily` puts at the edit mask's centroid) and, with
probability ``warp_prob``, a smooth random displacement field (a coarse grid of random
displacements upsampled bicubically). Both are composed into one sampling grid so the image
is resampled once (bilinear, reflection at the border).

``apply_misalignment`` warps the WHOLE image; it does not look at the mask. The caller
composites: ``where(mask, warped, background)``. The warped content is only meant to be used
inside the mask, so the (reflected) border behaviour of the warp does not matter there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_rotation_matrix2d, invert_affine_transform
from kornia.utils import create_meshgrid

from data_sim.errors import SimConfigError
from data_sim.family import Params, PlannedFamily
from data_sim.sampling import applied_indices, check_range
from data_sim.transfer import to_device

__all__ = [
    "MisalignConfig",
    "MisalignFamily",
    "apply_misalignment",
    "mask_centre",
    "sample_misalign_params",
]


@dataclass
class MisalignConfig:
    """Ranges for the misalignment family (all maxima are symmetric: U(-max, max)).

    p: probability a sample is misaligned.
    max_shift_px: translation per axis, pixels.
    max_rotation_deg: rotation about the image centre, degrees.
    max_scale: relative isotropic scale change (0.03 = +-3%).
    warp_prob: probability, given applied, of adding the smooth displacement field.
    warp_magnitude_px: max displacement of each coarse grid node, pixels, per axis.
    warp_grid: number of coarse grid nodes per axis (>= 2); larger = less smooth.
    """

    p: float = 0.3
    max_shift_px: float = 3.0
    max_rotation_deg: float = 2.0
    max_scale: float = 0.03
    warp_prob: float = 0.5
    warp_magnitude_px: float = 2.0
    warp_grid: int = 4

    def validate(self) -> None:
        for name in ("p", "warp_prob"):
            value = getattr(self, name)
            check_range(f"sim.misalign.{name}", (value, value), 0, 1)
        for name in ("max_shift_px", "max_rotation_deg", "max_scale", "warp_magnitude_px"):
            value = getattr(self, name)
            check_range(f"sim.misalign.{name}", (value, value), 0, 180)
        if self.warp_grid < 2:
            raise SimConfigError(f"sim.misalign.warp_grid={self.warp_grid} must be >= 2")


def sample_misalign_params(
    batch_size: int, cfg: MisalignConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw per-sample parameters on CPU; every entry has leading dimension ``batch_size``.

    Keys: ``applied`` (B,) bool; ``shift`` (B, 2) pixels as (dx, dy), positive = content moves
    right / down; ``angle`` (B,) degrees, positive = counter-clockwise on screen (kornia /
    OpenCV convention); ``scale`` (B,) around 1; ``warp`` (B, 2, G, G) coarse displacement
    nodes in pixels as (dx, dy), all-zero where the warp was not drawn; ``centre`` (B, 2) the
    rotation/scale centre as (x, y) fractions of width/height, 0.5 = image centre.

    Rotation and scale displace a point in proportion to its distance from ``centre``: about
    the image centre, a 2 deg / 3 % change moves the corners of a 512 px image by ~12 px,
    much more than ``max_shift_px``. To keep the misalignment local to the edit,
    :class:`MisalignFamily` overwrites ``centre`` with ``mask_centre(mask)`` before applying.
    """
    if cfg.warp_grid < 2:
        raise ValueError("warp_grid must be >= 2")
    g = cfg.warp_grid
    u = torch.rand(batch_size, 6, generator=generator)
    nodes = torch.rand(batch_size, 2, g, g, generator=generator) * 2.0 - 1.0
    warp_on = u[:, 5] < cfg.warp_prob
    return {
        "applied": u[:, 0] < cfg.p,
        "shift": (u[:, 1:3] * 2.0 - 1.0) * cfg.max_shift_px,
        "angle": (u[:, 3] * 2.0 - 1.0) * cfg.max_rotation_deg,
        "scale": 1.0 + (u[:, 4] * 2.0 - 1.0) * cfg.max_scale,
        "warp": nodes * cfg.warp_magnitude_px * warp_on.view(-1, 1, 1, 1).float(),
        "centre": torch.full((batch_size, 2), 0.5),
    }


def mask_centre(mask: torch.Tensor) -> torch.Tensor:
    """Centroid of each mask as (x, y) fractions of width/height, (B, 2); 0.5 if empty.

    Meant for ``params["centre"]`` so rotation/scale pivot on the edited region. Returned on
    the mask's device; ``apply_misalignment`` moves params to the images' device anyway.
    """
    b, _, h, w = mask.shape
    m = (mask[:, 0] > 0.5).to(torch.float32)
    total = m.sum(dim=(1, 2))
    ys = torch.linspace(0.0, 1.0, h, device=mask.device).view(1, h, 1)
    xs = torch.linspace(0.0, 1.0, w, device=mask.device).view(1, 1, w)
    cx = (m * xs).sum(dim=(1, 2)) / total.clamp_min(1.0)
    cy = (m * ys).sum(dim=(1, 2)) / total.clamp_min(1.0)
    centre = torch.stack([cx, cy], dim=1)
    return torch.where(total.view(b, 1) > 0, centre, torch.full_like(centre, 0.5))


def _bicubic_matrix(
    n_out: int, n_in: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D bicubic upsampling weights (align_corners=True)."""
    eye = torch.eye(n_in, device=device, dtype=dtype).view(n_in, 1, 1, n_in)
    w = F.interpolate(eye, size=(1, n_out), mode="bicubic", align_corners=True)
    return w.view(n_in, n_out).t()


def _sampling_grid(plan: dict, height: int, width: int) -> torch.Tensor:
    """Per-sample source coordinates (pixels, x/y last) for every output pixel: (B, H, W, 2)."""
    params = plan["sub"]
    shift = params["shift"]
    b = shift.shape[0]
    device, dtype = shift.device, shift.dtype
    extent = plan["extent"]
    centre = params["centre"] * extent if "centre" in params else (0.5 * extent).expand(b, 2)
    # Forward map dst = M @ src (content moves by +shift); sampling needs src = M^-1 @ dst.
    fwd = get_rotation_matrix2d(centre, params["angle"], params["scale"].view(-1, 1).expand(b, 2))
    fwd = torch.cat([fwd[:, :, :2], fwd[:, :, 2:] + shift.unsqueeze(-1)], dim=2)
    inv = invert_affine_transform(fwd)  # (B, 2, 3)

    dst = create_meshgrid(height, width, normalized_coordinates=False, device=device, dtype=dtype)
    src = torch.einsum("bij,bhwj->bhwi", inv[:, :, :2], dst.expand(b, -1, -1, -1))
    src = src + inv[:, None, None, :, 2]

    warp = params["warp"]
    if plan["warp"]:
        # Smooth field: coarse nodes span the image corner-to-corner (align_corners=True), so
        # the field is independent of resolution; bicubic keeps it C1 (no kinks at nodes).
        # Bicubic upsampling is a tensor product, so apply it as two small matrices
        # (H x G and W x G): same values as F.interpolate(..., "bicubic") at full size,
        # several times cheaper on CPU.
        gy, gx = warp.shape[-2:]
        ky = _bicubic_matrix(height, gy, device, dtype)
        kx = _bicubic_matrix(width, gx, device, dtype)
        field = torch.einsum("hi,bcij,wj->bhwc", ky, warp, kx)
        # Sampling at dst - d moves content by +d, consistent with the shift convention.
        src = src - field
    return src


def plan_misalign(
    params: dict[str, torch.Tensor], height: int, width: int, dtype: torch.dtype = torch.float32
) -> dict | None:
    """The CPU-side part of :func:`apply_misalignment` for images of ``dtype``: the applied
    samples, their parameters in the geometry's dtype, whether any has a warp, and the
    pixel-coordinate constants (None: no sample is applied)."""
    idx = applied_indices(params)
    if not idx.numel():
        return None
    # Geometry in float32 at least, so pixel coordinates of large images stay precise.
    gdtype = torch.promote_types(dtype, torch.float32)
    sub = {k: v.cpu()[idx].to(gdtype) for k, v in params.items() if k != "applied"}
    h, w = height, width
    return {
        "idx": idx,
        "sub": sub,
        "warp": bool((sub["warp"] != 0).any()),
        "extent": torch.tensor([w - 1, h - 1], dtype=gdtype),
        # Pixel -> normalised coordinates for grid_sample with align_corners=True (-1 / +1
        # are the centres of the first / last pixel, matching create_meshgrid's pixel grid).
        "scale": torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=gdtype),
    }


@torch.no_grad()
def run_misalign(
    images: torch.Tensor,
    plan: dict | None,
    *,
    centre: torch.Tensor | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """The device part of :func:`apply_misalignment` (``plan`` from :func:`plan_misalign`, on
    the images' device): no host read. ``centre`` (B, 2), on the device, replaces the
    planned pivots."""
    out = images if inplace else images.clone()
    if plan is None:
        return out
    idx = plan["idx"]
    if centre is not None:
        gdtype = plan["extent"].dtype
        plan = {**plan, "sub": {**plan["sub"], "centre": centre[idx].to(gdtype)}}
    _, _, h, w = images.shape
    grid = _sampling_grid(plan, h, w) * plan["scale"] - 1.0
    x = images[idx]
    warped = F.grid_sample(
        x.to(grid.dtype), grid, mode="bilinear", padding_mode="reflection", align_corners=True
    )
    out[idx] = warped.to(images.dtype)
    return out


@torch.no_grad()
def apply_misalignment(
    images: torch.Tensor, params: dict[str, torch.Tensor], *, inplace: bool = False
) -> torch.Tensor:
    """Warp each applied sample by its shift/rotation/scale (+ optional smooth field).

    Returns the whole warped image (the caller uses it inside the edit mask only; outside
    pixels are not preserved here). Border: reflection. Samples with ``applied == False`` are
    returned bit-exactly unchanged. Zero parameters give the input back up to interpolation
    round-off (~1e-6).

    Args:
        images: ``(B, C, H, W)`` float.
        params: from ``sample_misalign_params`` (any device; moved here).
        inplace: write into ``images`` instead of a copy (see :mod:`data_sim.family`).
    """
    h, w = images.shape[-2:]
    plan = to_device(plan_misalign(params, h, w, images.dtype), images.device)
    return run_misalign(images, plan, inplace=inplace)


class MisalignFamily(PlannedFamily[MisalignConfig]):
    key = "misalign"

    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params:
        return sample_misalign_params(batch_size, self.cfg, generator)

    def plan(self, params: Params, height: int, width: int) -> dict | None:
        # The pivot comes from the mask, on the device (run): a stored one is not read.
        drawn = {k: v for k, v in params.items() if k != "centre"}
        return plan_misalign(drawn, height, width)

    def run(
        self, images: torch.Tensor, params: Params, plan: dict | None, mask: torch.Tensor, *,
        inplace: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """Rotate and scale about the edit, not the image centre: the misalignment of a pasted
        region is local. The pivot is written into ``params`` so the sample can be replayed
        (on the mask's device: read only when it is needed)."""
        params["centre"] = mask_centre(mask)
        return run_misalign(images, plan, centre=params["centre"], inplace=inplace)

    @classmethod
    def describe(cls, params: Params, index: int) -> str:
        dx, dy = (float(v) for v in params["shift"][index])
        warp = " warp" if bool(params["warp"][index].abs().max() > 0) else ""
        return (
            f"misalign ({dx:+.1f},{dy:+.1f})px {float(params['angle'][index]):+.1f}deg "
            f"x{float(params['scale'][index]):.3f}{warp}"
        )
