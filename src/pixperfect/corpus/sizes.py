"""Bytes per sample of each shard format on a given corpus: what a clean shard of
``size`` px crops costs per sample in ``png``, ``webp`` (both lossless) and ``source`` (the
source image's own bytes and a crop box, :mod:`pixperfect.shards.format`), counted as a tar
stores them (a 512-byte header per member, data padded to 512 bytes). Every format decodes
to the same pixels, so this is a like-for-like comparison of storage.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from pixperfect.corpus.images import Hygiene, corpus_images
from pixperfect.corpus.listing import corpus_shards
from pixperfect.data.crops import random_crop_with_origin
from pixperfect.shards.format import encode_sample

FORMATS = ("png", "webp", "source")


def tar_bytes(record: dict) -> int:
    """What a sample's members take in a tar: header block plus data rounded up to blocks."""
    return sum(512 + -(-len(v) // 512) * 512 for k, v in record.items() if not k.startswith("__"))


def bytes_per_sample(
    corpus_pattern: str, size: int, formats: Sequence[str] = FORMATS, limit: int = 64
) -> dict[str, float]:
    """Mean tar bytes per clean ``size`` px sample in each of ``formats``, over one seeded
    crop of each of the first ``limit`` images of the corpus at least ``size`` px on their
    shorter side (smaller ones are skipped, as a build skips them by default)."""
    images = corpus_images(corpus_shards(corpus_pattern), Hygiene(min_side=size))
    totals = dict.fromkeys(formats, 0)
    count = 0
    for i, image in enumerate(itertools.islice(images, limit)):
        pixels = torch.from_numpy(image.pixels).permute(2, 0, 1).float().div_(255)
        crop, origin = random_crop_with_origin(pixels, size, torch.Generator().manual_seed(i))
        params = {"origin": {"source": image.url, "key": image.key, "size": size, **origin}}
        for fmt in formats:
            source = (image.ext, image.data) if fmt == "source" else None
            record = encode_sample(image.key, {"target": crop}, params, "clean", fmt, source)
            totals[fmt] += tar_bytes(record)
        count += 1
    if not count:
        raise ValueError(f"{corpus_pattern}: no image of at least {size} px to measure")
    return {fmt: total / count for fmt, total in totals.items()}
