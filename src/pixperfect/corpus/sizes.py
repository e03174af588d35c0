"""Bytes per sample of each shard format on a given corpus, with the target's fidelity: what
a clean shard of ``size`` px crops costs per sample in ``png``, ``webp`` (both lossless),
``source`` (the source image's own bytes and a crop box; bit-exact) and ``avif`` (lossy, at
least :data:`~pixperfect.shards.format.AVIF_MIN_PSNR_DB` dB; :mod:`pixperfect.shards.format`),
counted as a tar stores them (a 512-byte header per member, data padded to 512 bytes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from pixperfect.corpus.images import Hygiene, corpus_images
from pixperfect.corpus.listing import corpus_shards
from pixperfect.data.crops import random_crop_with_origin
from pixperfect.errors import InputError
from pixperfect.shards.format import FORMATS, decode_sample, encode_sample, psnr_db


def tar_bytes(record: dict) -> int:
    """What a sample's members take in a tar: header block plus data rounded up to blocks."""
    return sum(512 + -(-len(v) // 512) * 512 for k, v in record.items() if not k.startswith("__"))


def format_costs(
    corpus_pattern: str, size: int, formats: Sequence[str] = FORMATS, limit: int = 64
) -> dict[str, dict[str, float]]:
    """Per format: ``bytes`` (mean tar bytes per clean ``size`` px sample) and
    ``min_psnr_db`` (the worst decoded target against the lossless crop; inf when every one
    is exact), over one seeded crop of each of the first ``limit`` images of the corpus at
    least ``size`` px on their shorter side (smaller ones are skipped, as a build skips them
    by default)."""
    images = corpus_images(corpus_shards(corpus_pattern), Hygiene(min_side=size))
    totals = dict.fromkeys(formats, 0)
    worst = dict.fromkeys(formats, math.inf)
    count = 0
    for i, image in enumerate(itertools.islice(images, limit)):
        pixels = torch.from_numpy(image.pixels).permute(2, 0, 1).float().div_(255)
        crop, origin = random_crop_with_origin(pixels, size, torch.Generator().manual_seed(i))
        exact = (crop * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        params = {"origin": {"source": image.url, "key": image.key, "size": size, **origin}}
        for fmt in formats:
            source = (image.ext, image.data) if fmt == "source" else None
            record = encode_sample(image.key, {"target": crop}, params, "clean", fmt, source)
            totals[fmt] += tar_bytes(record)
            decoded = decode_sample(record, "clean", as_uint8=True)["target"]
            worst[fmt] = min(worst[fmt], psnr_db(decoded.permute(1, 2, 0).numpy(), exact))
        count += 1
    if not count:
        raise InputError(f"{corpus_pattern}: no image of at least {size} px to measure")
    return {f: {"bytes": totals[f] / count, "min_psnr_db": worst[f]} for f in formats}


def bytes_per_sample(
    corpus_pattern: str, size: int, formats: Sequence[str] = FORMATS, limit: int = 64
) -> dict[str, float]:
    """Mean tar bytes per sample in each format (:func:`format_costs` without fidelity)."""
    costs = format_costs(corpus_pattern, size, formats, limit)
    return {f: c["bytes"] for f, c in costs.items()}
