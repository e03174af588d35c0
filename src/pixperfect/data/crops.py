"""Random crops of clean photos, and the fixed held-out set of artifact triples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from data_sim.simulator import ArtifactSimulator, family_names


def resize_min_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale (bicubic) so the shorter side is at least ``size``; larger images unchanged."""
    h, w = image.shape[-2:]
    if min(h, w) >= size:
        return image
    s = size / min(h, w)
    new = (max(size, round(h * s)), max(size, round(w * s)))
    return F.interpolate(image[None], size=new, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def fit_within(image: torch.Tensor, max_size: int) -> torch.Tensor:
    """Downscale (area) so the longer side is at most ``max_size``."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_size:
        return image
    s = max_size / max(h, w)
    return F.interpolate(image[None], size=(round(h * s), round(w * s)), mode="area")[0]


def random_crop(
    image: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """A ``size`` x ``size`` crop at a random place, randomly flipped left-right.

    ``scale`` (lo, hi) != (1, 1): the photo is seen at a random scale in that range, i.e. a
    region of ``size / scale`` px (at most the photo's shorter side) is cropped and
    downscaled (area) to ``size``. Photos of 1000 px and more cropped at their native scale
    hold finer texture per pixel than the photos a refiner is scored and used on; the
    default draws nothing extra, so its crops are the same as before."""
    if tuple(scale) == (1.0, 1.0):
        return random_crop_with_origin(image, size, generator)[0]
    lo, hi = scale
    s = lo + (hi - lo) * float(torch.rand(1, generator=generator))
    region = max(size, min(round(size / s), *image.shape[-2:]))
    crop = random_crop_with_origin(image, region, generator)[0]
    if region == size:
        return crop
    return F.interpolate(crop[None], size=(size, size), mode="area")[0]


def random_crop_with_origin(
    image: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, int | bool]]:
    """:func:`random_crop` plus where it came from: ``top``, ``left`` (in the image upscaled
    to at least ``size``), ``flip`` and ``upscaled``."""
    upscaled = min(image.shape[-2:]) < size
    image = resize_min_side(image, size)
    h, w = image.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    crop = image[:, top : top + size, left : left + size]
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    if flip:
        crop = crop.flip(-1)
    return crop, {"top": top, "left": left, "flip": flip, "upscaled": upscaled}


def heldout_triples(
    images: dict[str, torch.Tensor],
    simulator: ArtifactSimulator,
    per_image: int,
    seed: int,
    crop_size: int | None = None,
    max_size: int | None = None,
) -> list[dict]:
    """A fixed list of artifact samples: ``per_image`` per photo, reproducible from ``seed``.

    With ``crop_size`` each sample is a random crop (equal sizes, batchable); without it
    each is the whole photo, fitted within ``max_size``. Every sample carries at least one
    artifact: a clean sample has nothing to fix. ``families``: the applied artifact
    families joined by ``+`` (:func:`data_sim.simulator.family_names`).
    """
    simulator = ArtifactSimulator(simulator.cfg, ensure_artifact=True)
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for name, image in images.items():
        if max_size:
            image = fit_within(image, max_size)
        if crop_size:
            clean = torch.stack(
                [random_crop(image, crop_size, generator) for _ in range(per_image)]
            )
        else:
            clean = image[None].expand(per_image, -1, -1, -1).contiguous()
        batch, params = simulator(clean, generator)
        for i in range(per_image):
            families = "+".join(family_names(params, i))  # a string: batches collate it
            samples.append(
                {"name": f"{name}#{i}", "families": families, **{k: v[i] for k, v in batch.items()}}
            )
    return samples
