"""A build from photos (a folder, a list file or ``skimage``): which crops each shard holds,
and writing one shard.

The plan is a pure function of the recipe: photos in a seeded order (computed once per
process, :attr:`BuildSpec.order`), ``crops_per_image`` crops each, ``shard_size`` samples
per shard, shards ``shard-NNNNNN.tar`` in one folder; every crop and simulation draw is
seeded by its photo and crop index. Unreadable photos, and photos whose shorter side is
under ``min_side`` (default: the crop size) with ``small_images=skip``, are skipped and
counted once per photo (``undecodable``, ``too_small``); with ``upscale`` small photos are
upsampled to the crop size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from data_sim.sampling import derive_seed
from pixperfect.data.crops import random_crop_with_origin
from pixperfect.shards.recipe import BuildSpec, deterministic, shard_name
from pixperfect.shards.samples import Crop, SampleWriter, make_simulator
from pixperfect.shards.tasks import Job
from pixperfect.shards.writing import ShardFile


def load_source(source: str) -> torch.Tensor:
    """(3, H, W) float in [0, 1] from a path or ``skimage:<name>``; raises on unreadable."""
    from pixperfect.data.photos import load_skimage_photo
    from pixperfect.imageio import read_image, to_rgb_float

    if source.startswith("skimage:"):
        return load_skimage_photo(source.split(":", 1)[1])
    return to_rgb_float(read_image(source).pixels)


def photo_crops(
    spec: BuildSpec, samples: Sequence[tuple[int, int]], skipped: Counter, examples: list[str]
) -> Iterator[Crop]:
    """The crops of ``samples`` ((photo, crop index) pairs); skipped photos are counted in
    ``skipped`` (once, at their crop 0) with a line in ``examples``."""
    cache: dict[int, torch.Tensor | tuple[str, str]] = {}
    for src, crop_index in samples:
        key = f"{src:06d}-{crop_index:04d}"
        if src not in cache:
            cache.clear()  # photos come in runs: keep one decoded at a time
            try:
                image = load_source(spec.sources[src])
                h, w = image.shape[-2:]
                if spec.small_images == "skip" and min(h, w) < spec.need_side:
                    image = ("too_small", f"{w}x{h} is smaller than {spec.need_side}px")
                cache[src] = image
            except (OSError, ValueError) as e:
                cache[src] = ("undecodable", f"unreadable ({e})")
        image = cache[src]
        if isinstance(image, tuple):
            if crop_index == 0:
                skipped[image[0]] += 1
                examples.append(f"{key}: {spec.sources[src]}: {image[1]}")
            continue
        generator = torch.Generator().manual_seed(derive_seed(spec.seed, src, crop_index))
        crop, origin = random_crop_with_origin(image, spec.size, generator)
        origin = {"source": spec.sources[src], "crop_index": crop_index, **origin}
        yield Crop(key, crop, origin, generator)


def build_photo_shard(spec: BuildSpec, index: int, out: Path) -> dict:
    """Write shard ``index`` crash-safely (:class:`ShardFile`) and return its sidecar.
    Artifacts are simulated on ``spec.device`` (deterministically on cuda)."""
    with deterministic(spec.device if spec.kind == "artifact" else "cpu"):
        skipped: Counter = Counter()
        examples: list[str] = []
        with ShardFile(out, shard_name(index)) as shard:
            writer = SampleWriter(shard, spec, make_simulator(spec))
            for crop in photo_crops(spec, spec.shard_samples(index), skipped, examples):
                writer.add(crop)
            writer.flush()
            return shard.finish(skipped, examples)


class PhotoJob(Job):
    """A photo build as :func:`pixperfect.shards.tasks.run` runs it: one unit per shard,
    array task ``i`` of ``T`` taking shards ``i, i + T, ...``."""

    spec: BuildSpec

    def names(self) -> list[str]:
        return self.spec.shard_names()

    def units(self, task_index: int, num_tasks: int) -> range:
        return range(task_index, self.spec.num_shards, num_tasks)

    def outputs(self, unit: int) -> list[str]:
        return [shard_name(unit)]

    def build_unit(self, unit: int, out: Path, todo: list[str]) -> list[dict]:
        return [build_photo_shard(self.spec, unit, out)]

    def samples_of(self, names: list[str]) -> float:
        index = {n: i for i, n in enumerate(self.names())}
        return sum(len(self.spec.shard_samples(index[n])) for n in names)
