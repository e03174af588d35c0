"""Edit-mask shapes (and their config, MaskConfig): brush strokes, boxes, object-like blobs, and
masks read from files.

Geometry is drawn on the CPU in units of the image's shorter side. Each drawn shape becomes a
*coverage field*: positive inside, zero on the edge and smooth across it, so a field computed
on a coarse grid, upsampled bilinearly and thresholded gives smooth edges at any image size.
Shape functions work on a whole batch of samples of one kind at once; file masks are read
once per folder and resized one sample at a time (each file has its own size).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data_sim.errors import SimConfigError
from data_sim.family import Params
from data_sim.sampling import check_range, randint, uniform
from data_sim.transfer import to_device

MASK_KINDS = ("stroke", "box", "blob", "file")  # index = the ``kind`` code in the params


@dataclass
class MaskConfig:
    """Random edit masks. Lengths are fractions of the image's shorter side."""

    # Relative frequency of each mask kind (need not sum to 1).
    stroke_weight: float = 0.45
    box_weight: float = 0.2
    blob_weight: float = 0.35
    file_weight: float = 0.0
    # Strokes
    strokes: tuple[int, int] = (1, 4)  # strokes per mask
    vertices: tuple[int, int] = (2, 6)  # segments per stroke
    stroke_width: tuple[float, float] = (0.05, 0.16)
    segment_length: tuple[float, float] = (0.1, 0.3)
    max_turn_deg: float = 60.0  # direction change between consecutive segments
    # Boxes
    box_size: tuple[float, float] = (0.2, 0.55)  # box side as a fraction of that image side
    # Blobs (object silhouettes)
    blob_count: tuple[int, int] = (1, 2)
    blob_size: tuple[float, float] = (0.12, 0.28)  # mean radius
    blob_aspect: float = 1.8  # largest stretch along a random axis
    blob_roughness: float = 0.45  # harmonic amplitude scale: 0 = ellipse
    blob_harmonics: int = 5
    # Masks from files: a folder of binary images, white = edited.
    mask_dir: str | None = None
    # Latent-grid blockiness
    latent_grid_prob: float = 0.25
    latent_cell: int = 8  # pixels per latent cell
    raster_size: int = 256  # coverage grid resolution cap (speed, not quality)

    def weights(self) -> torch.Tensor:
        return torch.tensor(
            [self.stroke_weight, self.box_weight, self.blob_weight, self.file_weight],
            dtype=torch.float64,
        )

    def validate(self) -> None:
        for kind in MASK_KINDS:
            w = getattr(self, f"{kind}_weight")
            check_range(f"sim.mask.{kind}_weight", (w, w), 0, math.inf)
        if float(self.weights().sum()) <= 0:
            raise SimConfigError(
                "sim.mask.{stroke,box,blob,file}_weight are all 0: give at least one mask kind "
                "a positive weight"
            )
        check_range("sim.mask.strokes", self.strokes, 1, 64)
        check_range("sim.mask.vertices", self.vertices, 1, 64)
        check_range("sim.mask.stroke_width", self.stroke_width, 1e-3, 1)
        check_range("sim.mask.segment_length", self.segment_length, 0, 2)
        check_range("sim.mask.box_size", self.box_size, 1e-3, 1)
        check_range("sim.mask.blob_count", self.blob_count, 1, 16)
        check_range("sim.mask.blob_size", self.blob_size, 1e-3, 1)
        check_range("sim.mask.blob_aspect", (self.blob_aspect, self.blob_aspect), 1, 10)
        check_range("sim.mask.blob_roughness", (self.blob_roughness,) * 2, 0, 1)
        check_range("sim.mask.blob_harmonics", (self.blob_harmonics,) * 2, 1, 16)
        check_range("sim.mask.latent_grid_prob", (self.latent_grid_prob,) * 2, 0, 1)
        check_range("sim.mask.latent_cell", (self.latent_cell, self.latent_cell), 1, 256)
        check_range("sim.mask.raster_size", (self.raster_size, self.raster_size), 8, 8192)
        if self.file_weight > 0:
            list_mask_files(self.mask_dir)  # cheap: lists the folder, reads nothing


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def sample_strokes(b: int, extent: torch.Tensor, cfg: MaskConfig, g: torch.Generator) -> Params:
    """Thick polylines with round caps, as painted with an inpainting tool's brush."""
    s_max, v_max = cfg.strokes[1], cfg.vertices[1]
    n_strokes = randint(g, b, *cfg.strokes)
    n_segments = torch.stack([randint(g, b, *cfg.vertices) for _ in range(s_max)], dim=1)
    stroke_active = torch.arange(s_max)[None] < n_strokes[:, None]
    segment_active = (torch.arange(v_max)[None, None] < n_segments[..., None]) & stroke_active[
        ..., None
    ]  # (B, S, V)
    start = uniform(g, b, 0, 1, s_max, 2) * extent
    heading = uniform(g, b, 0, 2 * math.pi, s_max, 1)
    turn = uniform(g, b, -1, 1, s_max, v_max) * math.radians(cfg.max_turn_deg)
    angle = heading + torch.cumsum(turn, dim=-1)
    length = uniform(g, b, *cfg.segment_length, s_max, v_max)
    steps = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * length[..., None]
    vertices = torch.cat([start[:, :, None], start[:, :, None] + steps.cumsum(dim=2)], dim=2)
    # Bounce strokes off the image border (a triangle wave keeps polylines connected): a hand
    # painting a mask stays on the canvas.
    vertices = extent - (extent - vertices.remainder(2 * extent)).abs()
    return {
        "vertices": vertices,  # (B, S, V+1, 2) xy
        "segment_active": segment_active,
        "stroke_width": uniform(g, b, *cfg.stroke_width, s_max),
    }


def sample_boxes(b: int, extent: torch.Tensor, cfg: MaskConfig, g: torch.Generator) -> Params:
    """Axis-aligned rectangles (a box-select tool); sides are fractions of each image side."""
    return {
        "box_center": uniform(g, b, 0.15, 0.85, 2) * extent,
        "box_size": uniform(g, b, *cfg.box_size, 2) * extent,
    }


def sample_blobs(b: int, extent: torch.Tensor, cfg: MaskConfig, g: torch.Generator) -> Params:
    """Star-convex shapes r(t) = r0 (1 + sum_k a_k cos(k t + phi_k)): object silhouettes."""
    n_max, k = cfg.blob_count[1], cfg.blob_harmonics
    amplitude = uniform(g, b, 0, cfg.blob_roughness, n_max, k) / torch.arange(1, k + 1) ** 0.5
    # Keep r(t) >= 0.25 r0 everywhere so the shape stays one piece around its centre.
    amplitude = amplitude * (0.75 / amplitude.sum(-1, keepdim=True).clamp_min(0.75))
    return {
        "blob_active": torch.arange(n_max)[None] < randint(g, b, *cfg.blob_count)[:, None],
        "blob_center": uniform(g, b, 0.2, 0.8, n_max, 2) * extent,
        "blob_radius": uniform(g, b, *cfg.blob_size, n_max),
        "blob_aspect": torch.exp(uniform(g, b, -1, 1, n_max) * math.log(cfg.blob_aspect)),
        "blob_angle": uniform(g, b, 0, math.pi, n_max),
        "blob_amplitude": amplitude,  # (B, N, K)
        "blob_phase": uniform(g, b, 0, 2 * math.pi, n_max, k),
    }


def plan_strokes(p: Params) -> list[dict]:
    """The CPU-side part of :func:`stroke_coverage`: per stroke, the samples that have it
    ordered by their segment count (descending), how many of them have each segment ``v``,
    and their vertices and widths gathered in that order. Segment counts are loop bounds,
    so they are read here, on the host, never from the device."""
    active = p["segment_active"].cpu()  # (B, S, V)
    vertices, widths = p["vertices"].cpu(), p["stroke_width"].cpu()
    strokes = []
    for s in range(vertices.shape[1]):
        counts = active[:, s].sum(dim=1)  # active segments of stroke s, per sample
        order = torch.argsort(counts, descending=True, stable=True)
        order = order[counts[order] > 0]
        if not order.numel():
            continue
        strokes.append(
            {
                "rows": order,
                # samples with segment v: the first m of ``rows``
                "segments": [int((counts[order] > v).sum()) for v in range(int(counts[order[0]]))],
                "vertices": vertices[:, s].index_select(0, order),  # (k, V+1, 2)
                "width": widths[:, s].index_select(0, order),
            }
        )
    return strokes


def run_strokes(x: torch.Tensor, y: torch.Tensor, plan: list[dict], b: int) -> torch.Tensor:
    """The device part of :func:`stroke_coverage` for ``b`` samples (``plan`` from
    :func:`plan_strokes`, on ``x``'s device): no host read."""
    coverage = torch.full((b, y.shape[1], x.shape[2]), -math.inf, device=x.device)
    t, dx, dy, nearest = (torch.empty_like(coverage) for _ in range(4))
    for stroke in plan:
        rows, vertices = stroke["rows"], stroke["vertices"]
        k = rows.numel()
        nearest[:k].fill_(math.inf)  # squared distance to stroke s
        for v, m in enumerate(stroke["segments"]):
            a, e = vertices[:m, v, :, None], vertices[:m, v + 1, :, None]
            ab = e - a  # (m, 2, 1)
            apx, apy = x - a[:, 0:1], y - a[:, 1:2]  # (m, 1, w), (m, h, 1)
            ab_n = ab / (ab * ab).sum(1, keepdim=True).clamp_min(1e-12)
            tm, dxm, dym, near = t[:m], dx[:m], dy[:m], nearest[:m]
            torch.add(apx * ab_n[:, 0:1], apy * ab_n[:, 1:2], out=tm).clamp_(0, 1)
            torch.mul(tm, ab[:, 0:1], out=dxm).sub_(apx)  # closest point minus p, x and y
            torch.mul(tm, ab[:, 1:2], out=dym).sub_(apy)
            dxm.square_().addcmul_(dym, dym)
            torch.minimum(near, dxm, out=near)
        half = stroke["width"][:, None, None] / 2
        reach = nearest[:k].sqrt_().neg_().add_(half)
        coverage.index_copy_(0, rows, torch.maximum(coverage.index_select(0, rows), reach))
    return coverage


def stroke_coverage(x: torch.Tensor, y: torch.Tensor, p: Params) -> torch.Tensor:
    """``half_width - distance`` to the nearest active segment, (B, h, w).

    ``x`` (1, 1, w) and ``y`` (1, h, 1) are pixel-centre coordinates. Per-sample terms are
    built on rows and columns and broadcast, and full-size work goes into reused buffers
    (fresh multi-MB allocations cost more than the arithmetic on CPU). Only active segments
    are computed: per stroke, the samples that have it are ordered by their segment count,
    so the samples with a segment ``v`` are a leading slice of the buffers (segments are
    active as a prefix). A batch's samples have ~half of the slots active.
    """
    plan = to_device(plan_strokes(p), x.device)
    return run_strokes(x, y, plan, p["vertices"].shape[0])


def box_coverage(x: torch.Tensor, y: torch.Tensor, p: Params) -> torch.Tensor:
    """Signed Chebyshev-style distance to the box edge, (B, h, w)."""
    c, half = p["box_center"][..., None], p["box_size"][..., None] / 2  # (B, 2, 1)
    return torch.minimum(half[:, 0:1] - (x - c[:, 0:1]).abs(), half[:, 1:2] - (y - c[:, 1:2]).abs())


def blob_coverage(x: torch.Tensor, y: torch.Tensor, p: Params) -> torch.Tensor:
    """``r(theta) - rho`` in each blob's rotated, stretched frame; union over blobs.

    cos(k theta) and sin(k theta) come from the angle-addition recurrence on (u, v) / rho,
    which avoids an atan2 and K cosines per pixel; full-size work reuses buffers.
    """
    b, n_max = p["blob_active"].shape
    coverage = torch.full((b, y.shape[1], x.shape[2]), -math.inf, device=x.device)
    u, v, rho, c1, s1, ck, sk, tmp, shape = (torch.empty_like(coverage) for _ in range(9))
    for n in range(n_max):
        c = p["blob_center"][:, n, :, None, None]  # (B, 2, 1, 1)
        dx, dy = x - c[:, 0], y - c[:, 1]  # (B, 1, w), (B, h, 1)
        angle = p["blob_angle"][:, n, None, None]
        stretch = p["blob_aspect"][:, n, None, None].sqrt()  # area-preserving: u / s, v * s
        cos, sin = torch.cos(angle), torch.sin(angle)
        torch.add(dx * (cos / stretch), dy * (sin / stretch), out=u)
        torch.sub(dy * (cos * stretch), dx * (sin * stretch), out=v)
        torch.hypot(u, v, out=rho)
        torch.div(u, rho.clamp_min(1e-12), out=c1)
        torch.div(v, rho.clamp_min(1e-12), out=s1)
        ck.copy_(c1)
        sk.copy_(s1)
        amp, phase = p["blob_amplitude"][:, n], p["blob_phase"][:, n]  # (B, K)
        alpha = (amp * torch.cos(phase))[..., None, None]  # a cos(k t + f) = alpha c_k + beta s_k
        beta = (-amp * torch.sin(phase))[..., None, None]
        shape.fill_(1)
        for k in range(amp.shape[-1]):
            if k:  # (c_k, s_k) <- rotate by theta
                torch.mul(sk, s1, out=tmp)
                sk.mul_(c1).addcmul_(ck, s1)
                ck.mul_(c1).sub_(tmp)
            shape.addcmul_(ck, alpha[:, k]).addcmul_(sk, beta[:, k])
        shape.mul_(p["blob_radius"][:, n, None, None]).sub_(rho)
        shape.add_(torch.where(p["blob_active"][:, n], 0.0, -math.inf)[:, None, None])
        torch.maximum(coverage, shape, out=coverage)
    return coverage


def mask_dir_error(mask_dir: str | None, problem: str) -> ValueError:
    return ValueError(
        f"sim.mask.mask_dir={mask_dir!r}: {problem}; with sim.mask.file_weight > 0 it must be a "
        "folder of binary mask images (PNG, JPEG, ...; white = edited). Point "
        "sim.mask.mask_dir at one, or set sim.mask.file_weight=0"
    )


def list_mask_files(mask_dir: str | None) -> list[Path]:
    """Image files in ``mask_dir`` in name order; a clear error when there are none."""
    if mask_dir is None:
        raise mask_dir_error(mask_dir, "no folder given")
    folder = Path(mask_dir).expanduser()
    if not folder.is_dir():
        raise mask_dir_error(mask_dir, "not a folder")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise mask_dir_error(mask_dir, "holds no image files")
    return files


@lru_cache(maxsize=8)
def load_mask_bank(mask_dir: str) -> tuple[torch.Tensor, ...]:
    """Every readable, non-empty mask in ``mask_dir`` as a bool (h, w) tensor, read once.

    Files that cannot be decoded or hold no edited pixel are skipped with one warning naming
    them. Cached per folder for the life of the process (edit the folder -> restart).
    """
    masks, skipped = [], []
    for path in list_mask_files(mask_dir):
        try:
            with Image.open(path) as image:
                grey = torch.from_numpy(np.array(image.convert("L")))
        except (OSError, ValueError, SyntaxError) as err:  # PIL's decode failures
            skipped.append(f"{path.name} ({type(err).__name__})")
            continue
        peak = int(grey.max())
        if peak == 0:
            skipped.append(f"{path.name} (no edited pixel)")
            continue
        masks.append(grey > peak / 2)  # works for 0/1 and 0/255 masks alike
    if skipped:
        warnings.warn(
            f"sim.mask.mask_dir={mask_dir!r}: skipped {len(skipped)} unusable mask file(s): "
            + ", ".join(skipped),
            stacklevel=2,
        )
    if not masks:
        raise mask_dir_error(mask_dir, "none of its image files is a readable, non-empty mask")
    return tuple(masks)


def file_masks(
    bank: tuple[torch.Tensor, ...],
    index: torch.Tensor,
    flip: torch.Tensor,
    height: int,
    width: int,
    device: torch.device,
) -> torch.Tensor:
    """Masks ``bank[index]`` resized to (height, width) and flipped left-right where ``flip``:
    (N, 1, H, W) float in {0, 1}. One resize per sample, as each file has its own size."""
    out = []
    for i, f in zip(index.tolist(), flip.tolist(), strict=True):
        m = bank[i].to(device, torch.float32)[None, None]
        m = F.interpolate(m, size=(height, width), mode="bilinear", antialias=True) > 0.5
        if not m.any():  # a region too small to survive the resize: keep any touched pixel
            src = bank[i].to(device, torch.float32)[None, None]
            m = F.adaptive_max_pool2d(src, (height, width)) > 0
        out.append(m.flip(-1) if f else m)
    return torch.cat(out).float()
