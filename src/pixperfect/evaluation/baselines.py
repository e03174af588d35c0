"""Classical fixes a user would reach for instead of the refiner, as evaluation baselines.

Each baseline is ``(composite, mask) -> image`` on (B, 3, H, W) float tensors in [0, 1]
with a (B, 1, H, W) mask (edited where > 0.5). Like the refiner they see only what a user
has after an edit: the composite, whose outside is the original photo, and the edit mask.
All are deterministic and run on the CPU; an empty mask (or one covering the whole image,
which leaves no surroundings to match) returns the composite unchanged.

``reinhard``
    Reinhard et al. (2001) colour transfer inside the mask, in CIE Lab (kornia): per
    channel, the mean and standard deviation of a ring just inside the mask boundary are
    mapped onto those of a ring just outside it, and the affine map is applied to the whole
    masked region. The std ratio is clamped to [1/2, 2] so a flat ring cannot blow up the
    edit. Fixes global colour/tone shifts; not spatially varying ones, not texture.

``seam_affine``
    One affine colour map per image (3x4, in RGB) fitted across the seam: at each seam
    pixel the local mean colour of the inner ring is paired with that of the outer ring
    next to it, and a ridge regression towards no change fits the map between the pairs
    (:func:`pixperfect.models.colour_prior.seam_affine_transfer`, also the refiners'
    ``colour_prior: seam_affine``). Like-with-like pairs make it robust where the two rings
    hold different content, which is where Reinhard goes wrong.

``poisson``
    Poisson image editing (Pérez et al. 2003) with OpenCV's ``cv2.seamlessClone``
    (NORMAL_CLONE): the guidance field is the edit's own gradients, the boundary values
    come from the surroundings. ``seamlessClone(src=composite, dst=composite, mask)`` would
    be a no-op (to within 1/255): the composite's gradient field *contains* the seam (the
    jump across the mask boundary), and OpenCV takes the gradients of a 3-pixel ring inside
    the mask from ``dst``. So the two layers a user would have are rebuilt first:

    - ``src`` (the edit layer): the composite inside the mask, extended outwards by
      nearest-neighbour replication, so its gradient across the boundary is ~0, not the seam;
    - ``dst`` (the background layer): the composite outside the mask, extended inwards the
      same way;

    and the clone mask is the edit mask dilated by 3 px (OpenCV erodes its mask by 3 px
    before taking ``src`` gradients, so the guidance switches to ``src`` right at the edit
    boundary). The result keeps the edit's detail and shifts its colour smoothly so that it
    meets the surroundings at the boundary. ``seamlessClone`` works on 8-bit images and
    fails for masks that touch the image border, so the images are edge-replicated by a
    margin and the mask zero-padded first: along the image border the edit then meets a
    copy of itself, which adds no correction there (about a free boundary). OpenCV solves
    over the mask's bounding box, so it may also nudge background pixels inside that box;
    pixels outside it are returned untouched (bit-exact).

``laplacian``
    Multi-band blending (Burt & Adelson 1983) of the same two layers (edit layer extended
    outwards, background layer extended inwards) with the binary mask: each level of the
    Laplacian pyramids is mixed with the matching level of the mask's Gaussian pyramid,
    so low frequencies (colour, tone) cross-fade over a wide zone, about 2**levels px, on
    both sides of the boundary, while fine detail switches sharply. Pixels farther than
    the coarsest level's reach from the mask are returned untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from imageops.morphology import dilate
from pixperfect.models.colour_prior import (
    MAX_RATIO,
    RING_PX,
    ring_colour_transfer,
    seam_affine_transfer,
)

Baseline = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_image(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], margin: int) -> Baseline:
    """Lift a (3, H, W), (1, H, W) bool function to batches. ``fn`` sees only the crop
    around the mask's bounding box plus ``margin`` px (all that it reads or changes),
    pasted back into the image; empty or full masks pass through."""

    def apply(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if composite.ndim != 4 or mask.ndim != 4:
            raise ValueError("expected (B, 3, H, W) images and (B, 1, H, W) masks")
        out = []
        for image, m in zip(composite, mask, strict=True):
            binary = m > 0.5
            if not binary.any() or binary.all():
                out.append(image)
                continue
            ys, xs = torch.nonzero(binary[0], as_tuple=True)
            top, left = max(int(ys.min()) - margin, 0), max(int(xs.min()) - margin, 0)
            bottom, right = int(ys.max()) + margin + 1, int(xs.max()) + margin + 1
            crop = (slice(None), slice(top, bottom), slice(left, right))
            result = image.clone()
            result[crop] = fn(image[crop].float(), binary[crop]).to(image.dtype)
            out.append(result)
        return torch.stack(out)

    return apply


def nearest_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) with every pixel outside ``known`` (H, W bool) replaced by the
    nearest known pixel (Euclidean): a layer extended beyond its region."""
    _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
    return image[iy, ix]


# ---------------------------------------------------------------- Reinhard colour transfer


def reinhard_transfer(
    composite: torch.Tensor, mask: torch.Tensor, ring: int = RING_PX, max_ratio: float = MAX_RATIO
) -> torch.Tensor:
    """Reinhard colour transfer inside the mask (module docstring): Lab statistics of the
    ``ring`` px inside the boundary are matched to those of the ``ring`` px outside it.
    The same function is the refiners' ``colour_prior: reinhard`` (batched, any device)."""
    return ring_colour_transfer(composite, mask, ring, max_ratio)


# ---------------------------------------------------------------- Poisson (seamlessClone)


def _to_u8(image: torch.Tensor) -> np.ndarray:
    return image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).contiguous().numpy()


def poisson_blend(composite: torch.Tensor, mask: torch.Tensor, margin: int = 8) -> torch.Tensor:
    """Poisson blending of the edit into its surroundings with ``cv2.seamlessClone`` (module
    docstring explains the two layers and the padding)."""
    return _per_image(lambda c, m: _poisson(c, m, margin), margin)(composite, mask)


DILATE = 3  # OpenCV erodes the clone mask by 3 px (3 x 3 kernel, 3 iterations)


def _poisson(image: torch.Tensor, mask: torch.Tensor, margin: int) -> torch.Tensor:
    p = max(margin, DILATE + 2)
    padded = F.pad(image[None], (p, p, p, p), mode="replicate")[0]
    known = F.pad(mask[None].float(), (p, p, p, p))[0, 0].numpy() > 0.5
    rgb = _to_u8(padded)
    src = nearest_fill(rgb, known)  # edit layer, extended outwards
    dst = nearest_fill(rgb, ~known)  # background layer, extended inwards
    clone = dilate(torch.from_numpy(known)[None, None], DILATE)[0, 0].numpy()
    x, y, w, h = cv2.boundingRect(clone.astype(np.uint8))
    out = cv2.seamlessClone(
        np.ascontiguousarray(src),
        np.ascontiguousarray(dst),
        clone.astype(np.uint8) * 255,
        (x + w // 2, y + h // 2),
        cv2.NORMAL_CLONE,
    )
    # The composite outside the box OpenCV solved over (bit-exact); the edit inside it.
    box = torch.zeros_like(mask)
    box[:, max(y - p, 0) : y + h - p, max(x - p, 0) : x + w - p] = True
    cloned = torch.from_numpy(out[p:-p, p:-p]).permute(2, 0, 1).float() / 255
    return torch.where(box, cloned, image)


# ---------------------------------------------------------------- Laplacian pyramid blending


def laplacian_blend(composite: torch.Tensor, mask: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Multi-band blending of the edit layer into the background layer (module docstring),
    with at most ``levels`` pyramid levels (fewer for small images)."""
    return _per_image(lambda c, m: _laplacian(c, m, levels), 2 ** (levels + 1))(composite, mask)


BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16  # Burt & Adelson's generating kernel


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = BINOMIAL.to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _laplacian(image: torch.Tensor, mask: torch.Tensor, levels: int) -> torch.Tensor:
    known = mask[0].numpy()
    rgb = image.permute(1, 2, 0).numpy()
    a = torch.from_numpy(nearest_fill(rgb, known)).permute(2, 0, 1)[None]
    b = torch.from_numpy(nearest_fill(rgb, ~known)).permute(2, 0, 1)[None]
    depth = torch.from_numpy(ndimage.distance_transform_edt(known)).float()[None, None]
    # Fewer levels for small images and thin masks: the coarsest ramp, 2**(levels+1) px,
    # stays within half the mask's largest inscribed radius.
    levels = min(levels, int(np.log2(min(image.shape[-2:]))) - 2)
    levels = max(0, min(levels, int(np.log2(max(float(depth.max()), 1.0))) - 2))
    bands = []
    for k in range(levels + 1):
        # The edit's weight in band k ramps from 0 at the boundary to 1 at 2**(k+1) px in.
        weight = (depth / 2 ** (k + 1)).clamp(0, 1)
        weight = F.interpolate(weight, size=a.shape[-2:], mode="area") if k else weight
        if k == levels:  # the coarsest Gaussian level closes the pyramid
            bands.append(weight * a + (1 - weight) * b)
            break
        a_small, b_small = _down(a), _down(b)
        size = a.shape[-2:]
        bands.append(weight * (a - _up(a_small, size)) + (1 - weight) * (b - _up(b_small, size)))
        a, b = a_small, b_small
    out = bands.pop()
    for band in reversed(bands):
        out = band + _up(out, band.shape[-2:])
    return torch.where(mask, out[0].clamp(0, 1), image)


BASELINES: dict[str, Baseline] = {
    "reinhard": reinhard_transfer,
    "seam_affine": seam_affine_transfer,
    "poisson": poisson_blend,
    "laplacian": laplacian_blend,
}
