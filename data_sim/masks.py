"""Edit masks and compositing alphas.

The *edit mask* is the binary region a user asked the editor to change; the refiner sees it.
Its kind is drawn per sample with configurable weights: free-form brush strokes, boxes,
object-like blobs, or masks read from a folder (shapes in :mod:`data_sim.mask_shapes`). Some
masks are snapped to whole latent cells, as a latent editor changes every cell it touches.

The *compositing alpha* is how the editor pasted its output back over the original: the edit
mask dilated or eroded by a random radius, then hard or feathered (a per-sample Gaussian
blur), so seams are abrupt or soft and need not sit exactly on the mask's edge.

Parameters are drawn on the CPU; rasterisation is batched on the images' device. Drawn shapes
become a coverage field on a grid of at most ``raster_size`` pixels a side, upsampled
bilinearly and thresholded, which keeps edges smooth and the cost independent of image size.

Neither is an artifact family (:mod:`data_sim.family`): they say where the families' output
is pasted, and every family is handed the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data_sim.blur import gaussian_blur2d
from data_sim.mask_shapes import (
    MASK_KINDS,
    MaskConfig,
    blob_coverage,
    box_coverage,
    file_masks,
    load_mask_bank,
    mask_dir_error,
    plan_strokes,
    run_strokes,
    sample_blobs,
    sample_boxes,
    sample_strokes,
)
from data_sim.sampling import bernoulli, check_range, uniform
from data_sim.transfer import to_device
from imageops.morphology import plan_grow, run_grow

STROKE, BOX, BLOB, FILE = range(4)


def grow_masks(mask: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Dilate (radius > 0) or erode (radius < 0) each binary mask by its own radius in pixels,
    with a Euclidean disc. Erosion is capped at half the mask's thickness, so a thin stroke is
    thinned, never erased."""
    return run_grow(mask, to_device(plan_grow(radius), mask.device))


@dataclass
class BoundaryConfig:
    """How the edited region is pasted back: grown or shrunk, then hard or feathered."""

    hard_prob: float = 0.3
    feather_sigma: tuple[float, float] = (0.8, 4.0)  # Gaussian sigma in pixels
    alpha_grow: tuple[float, float] = (-3.0, 4.0)  # pixels; > 0 dilates, < 0 erodes

    def validate(self) -> None:
        check_range("sim.boundary.hard_prob", (self.hard_prob, self.hard_prob), 0, 1)
        check_range("sim.boundary.feather_sigma", self.feather_sigma, 0.1, 64)
        check_range("sim.boundary.alpha_grow", self.alpha_grow, -64, 64)


def sample_mask_params(
    batch_size: int, height: int, width: int, cfg: MaskConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw per-sample mask kinds and geometry (units of the shorter image side).

    Every kind's geometry is drawn for every sample, so the draws of one kind do not shift
    when another kind's weight changes; rasterisation uses the drawn kind's only.
    """
    b, g = batch_size, generator
    extent = torch.tensor([width, height], dtype=torch.float32) / min(height, width)
    kind = torch.multinomial(cfg.weights(), b, replacement=True, generator=g)
    params = {
        "kind": kind,  # codes into MASK_KINDS
        "is_box": kind == BOX,
        **sample_strokes(b, extent, cfg, g),
        **sample_boxes(b, extent, cfg, g),
        **sample_blobs(b, extent, cfg, g),
    }
    pick, flip = uniform(g, b, 0, 1), bernoulli(g, b, 0.5)
    file_index = torch.full((b,), -1)
    if (kind == FILE).any():
        if cfg.mask_dir is None:
            raise mask_dir_error(None, "no folder given")
        n = len(load_mask_bank(cfg.mask_dir))
        file_index = torch.where(kind == FILE, (pick * n).long().clamp_max(n - 1), file_index)
    params["file_index"] = file_index  # -1 unless kind == FILE; name order in mask_dir
    params["file_flip"] = flip
    snap = bernoulli(g, b, cfg.latent_grid_prob)
    params["latent_cell"] = torch.where(snap, cfg.latent_cell, 0)  # 0 = not snapped
    return params


def snap_to_latent_grid(mask: torch.Tensor, cell: int) -> torch.Tensor:
    """Mark every ``cell`` x ``cell`` block (aligned to the top-left) that the mask touches.

    H and W need not be multiples of ``cell``: the partial last row/column of cells is padded
    with zeros and cropped back.
    """
    h, w = mask.shape[-2:]
    padded = F.pad(mask, (0, -w % cell, 0, -h % cell))
    cells = F.max_pool2d(padded, cell)
    return cells.repeat_interleave(cell, dim=-2).repeat_interleave(cell, dim=-1)[..., :h, :w]


# Per drawn kind: the parameter keys its coverage field reads.
_KEYS = {BOX: ("box_center", "box_size"), BLOB: tuple(f"blob_{k}" for k in (
    "active", "center", "radius", "aspect", "angle", "amplitude", "phase"))}  # fmt: skip


def _plan_kind(code: int, sub: dict[str, torch.Tensor]) -> dict | list:
    """What the coverage field of kind ``code`` needs on the device for its samples ``sub``."""
    if code == STROKE:
        return plan_strokes(sub)
    return {k: sub[k] for k in _KEYS[code]}


def plan_masks(
    params: dict[str, torch.Tensor],
    height: int,
    width: int,
    raster_size: int = 256,
    *,
    mask_dir: str | None = None,
) -> dict:
    """The CPU-side part of :func:`rasterize_masks`: the samples of each kind and their shape
    parameters, the file masks (read and resized here: their sizes are the files'), and the
    samples snapped to each latent cell size. Everything the device part needs to know on
    the host is decided here."""
    kind = params["kind"].cpu()
    unit = min(height, width)
    scale = min(1.0, raster_size / unit)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    kinds = []
    for code in (STROKE, BOX, BLOB):
        idx = (kind == code).nonzero().squeeze(1)
        if len(idx):
            sub = {k: v.cpu()[idx] for k, v in params.items() if v.ndim >= 1}
            kinds.append({"code": code, "idx": idx, "shape": _plan_kind(code, sub)})
    files = None
    idx = (kind == FILE).nonzero().squeeze(1)
    if len(idx):
        if mask_dir is None:
            raise mask_dir_error(None, "samples of kind 'file' need rasterize_masks(mask_dir=)")
        index, flip = params["file_index"].cpu()[idx], params["file_flip"].cpu()[idx]
        bank = load_mask_bank(mask_dir)
        cpu = torch.device("cpu")
        files = {"idx": idx, "masks": file_masks(bank, index, flip, height, width, cpu) > 0.5}
    cells = params["latent_cell"].cpu()
    snaps = [
        {"cell": cell, "idx": (cells == cell).nonzero().squeeze(1)}
        for cell in cells.unique().tolist()
        if cell > 0
    ]
    return {"b": len(kind), "raster": (h, w), "kinds": kinds, "files": files, "snaps": snaps}


def run_masks(plan: dict, height: int, width: int, device: torch.device) -> torch.Tensor:
    """The device part of :func:`rasterize_masks` (``plan`` from :func:`plan_masks`, on
    ``device``): no host read."""
    unit = min(height, width)
    h, w = plan["raster"]
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (height / h) / unit
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (width / w) / unit
    x, y = xs.view(1, 1, w), ys.view(1, h, 1)

    # Each kind's field is computed on its own samples only (a gather, still batched).
    coverage = torch.full((plan["b"], h, w), -1.0, device=device)
    for entry in plan["kinds"]:
        code, idx, shape = entry["code"], entry["idx"], entry["shape"]
        if code == STROKE:
            coverage[idx] = run_strokes(x, y, shape, idx.shape[0])
        else:
            coverage[idx] = (box_coverage if code == BOX else blob_coverage)(x, y, shape)
    coverage = F.interpolate(
        coverage[:, None].clamp_min(-1.0), size=(height, width), mode="bilinear"
    )
    mask = (coverage > 0).float()
    if plan["files"] is not None:
        mask[plan["files"]["idx"]] = plan["files"]["masks"].float()
    for snap in plan["snaps"]:
        idx = snap["idx"]
        mask[idx] = snap_to_latent_grid(mask[idx], snap["cell"])
    return mask


def rasterize_masks(
    params: dict[str, torch.Tensor],
    height: int,
    width: int,
    device: torch.device,
    raster_size: int = 256,
    *,
    mask_dir: str | None = None,
) -> torch.Tensor:
    """Binary edit masks (B, 1, H, W) float32 from :func:`sample_mask_params` output.

    ``mask_dir`` is needed only when some sample has kind "file" (``MaskConfig.mask_dir``).
    """
    plan = plan_masks(params, height, width, raster_size, mask_dir=mask_dir)
    return run_masks(to_device(plan, device), height, width, device)


def sample_boundary_params(
    batch_size: int, cfg: BoundaryConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    return {
        "hard": bernoulli(generator, batch_size, cfg.hard_prob),
        "feather_sigma": uniform(generator, batch_size, *cfg.feather_sigma),
        "grow": uniform(generator, batch_size, *cfg.alpha_grow),  # pixels, < 0 erodes
    }


def plan_alpha(params: dict[str, torch.Tensor], *, grow: bool = False) -> dict:
    """The CPU-side part of :func:`compositing_alpha`: the growth plan, which samples are
    feathered, their sigmas and the blur's kernel size (read here, on the host)."""
    soft = (~params["hard"].bool().cpu()).nonzero().squeeze(1)
    plan: dict = {"grow": plan_grow(params["grow"]) if grow else None, "soft": None}
    if soft.numel():
        sigma = params["feather_sigma"].cpu()[soft].float()
        radius = math.ceil(3 * float(sigma.max()))
        plan["soft"] = {"idx": soft, "sigma": torch.stack([sigma, sigma], dim=1)}
        plan["size"] = 2 * radius + 1
    return plan


def run_alpha(mask: torch.Tensor, plan: dict) -> torch.Tensor:
    """The device part of :func:`compositing_alpha` (``plan`` from :func:`plan_alpha`, on
    the mask's device): no host read."""
    if plan["grow"] is not None:
        mask = run_grow(mask, plan["grow"])
    # Only the feathered samples are blurred; hard ones keep the binary mask.
    if plan["soft"] is None:
        return mask.clone()
    size, idx = plan["size"], plan["soft"]["idx"]
    blurred = gaussian_blur2d(
        mask.index_select(0, idx),
        (size, size),
        plan["soft"]["sigma"].to(mask),
        border_type="replicate",
    )
    # Blur tails below 1/512 would be invisible yet make "untouched" pixels differ.
    blurred = torch.where(blurred < 1 / 512, torch.zeros_like(blurred), blurred)
    return mask.index_copy(0, idx, blurred)


def compositing_alpha(
    mask: torch.Tensor, params: dict[str, torch.Tensor], *, grow: bool = False
) -> torch.Tensor:
    """Hard or feathered alpha (B, 1, H, W) in [0, 1] from a binary edit mask.

    ``grow``: first dilate/erode the mask by ``params["grow"]`` pixels, as the simulator does
    (docs/method.md §5.4). Without it the paste follows the mask's own edge, and a
    hard sample's alpha is the mask itself.
    """
    return run_alpha(mask, to_device(plan_alpha(params, grow=grow), mask.device))


def describe_mask(params: dict[str, torch.Tensor], index: int) -> str:
    """The mask kind of sample ``index``, and its latent cell when snapped."""
    text = MASK_KINDS[int(params["kind"][index])]
    if int(params["latent_cell"][index]):
        text += f" (latent {int(params['latent_cell'][index])}px)"
    return text


def describe_boundary(params: dict[str, torch.Tensor], index: int) -> str:
    """How sample ``index`` is pasted back: hard or feathered, and grown or shrunk."""
    hard = bool(params["hard"][index])
    paste = "hard" if hard else f"feather {float(params['feather_sigma'][index]):.1f}px"
    return f"{paste} grow {float(params['grow'][index]):+.1f}px"
