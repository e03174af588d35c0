"""``pixperfect shards build --images PATTERN``: clean or artifact shards from an image corpus
in tar shards, planned by input shard, never by image.

- **Work by input shard.** Array task ``j`` of ``T`` takes input shards ``j, j + T, ...``.
  Input shard ``i`` (stem ``S``, e.g. ``00042``) gives ``crops_per_image`` output shards,
  one per crop round: round ``k`` holds one random crop of every kept image of that input
  shard, in tar order, as ``OUT/GGGG/S-rK.tar`` (``GGGG`` = ``i // 1000``: no folder holds
  more than 1000 input shards' outputs). A unit of work reads its input shard once and
  writes the rounds still missing, so rerunning one task index rebuilds exactly its shards.
- **Seeds.** Every crop and simulation draw is seeded by (recipe seed, input shard stem,
  sample key, round), and exact-duplicate skipping (``--dedupe``) looks within one input
  shard: any output shard can be rebuilt alone and comes out byte-identical.
- **Hygiene** (:mod:`pixperfect.corpus.images`): truncated, undecodable and (unless
  ``small_images=upscale``) too small images are skipped; counts per reason go into the
  round-0 sidecar of their input shard and sum into the manifest. An input shard that cannot
  be read (404, a cut transfer) writes nothing: the task goes on with its other input shards
  and ends with an error naming it, and a rerun retries it.
- **Plan size.** The plan is the list of input shard URLs (:func:`corpus_shards`, which
  opens none); ``plan.json`` and the manifest hold the pattern, counts and a sha256 of the
  URLs, not the images. :func:`dry_run` prints the plan without opening any shard.

Crash safety, resume, ``--workers`` and the disk-full error are the photo builds' own
(:mod:`pixperfect.shards.tasks`, :mod:`pixperfect.shards.writing`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from data_sim.sampling import derive_seed
from pixperfect.corpus.images import Hygiene, SkipTally, corpus_images
from pixperfect.corpus.listing import corpus_shards, shard_stem
from pixperfect.data.crops import random_crop_with_origin
from pixperfect.errors import InputError
from pixperfect.shards.locations import is_url
from pixperfect.shards.recipe import (
    SIM_BATCH,
    deterministic,
    finish_recipe,
    format_version,
    list_hash,
    recipe_hash,
    validate_common,
)
from pixperfect.shards.samples import Crop, SampleWriter, make_simulator
from pixperfect.shards.tasks import Job, UnitFailed, run
from pixperfect.shards.writing import ShardFile, human

GROUP = 1000  # input shards whose outputs share a sub-folder
# Rough bytes per crop pixel of a whole sample (target, composite, mask, alpha, params) by
# kind and format, from docs/shards.md's measurements; only for --dry-run's estimate.
BYTES_PER_PIXEL = {
    ("clean", "png"): 1.8,
    ("clean", "webp"): 1.2,
    ("clean", "source"): 0.6,
    ("artifact", "png"): 3.8,
    ("artifact", "webp"): 2.6,
    ("artifact", "source"): 1.9,
    # benchmarks/bench_corpus.py, 512 px crops of q95 JPEGs: 104,872 B a clean sample
    ("clean", "avif"): 0.4,
    ("artifact", "avif"): 0.9,
}
IMG2DATASET_PER_SHARD = 10_000  # img2dataset's default number of samples per tar


@dataclass
class CorpusSpec:
    """Everything a corpus build's shard bytes depend on (the recipe); ``corpus`` is the
    pattern, URL or ``.txt`` list of input shards (:func:`corpus_shards`)."""

    corpus: str
    kind: str = "artifact"
    size: int = 128
    crops_per_image: int = 4
    seed: int = 0
    image_format: str = "png"
    small_images: str = "skip"
    min_side: int | None = None  # shorter side an image needs; None: the crop size
    dedupe: bool = False
    sim: dict = field(default_factory=dict)  # SimConfig as a plain dict (artifact shards)
    device: str = "cpu"

    def validate(self) -> None:
        validate_common(self)
        names = self.stems
        if not names:
            raise InputError(f"{self.corpus}: no input shard")

    @property
    def need_side(self) -> int:
        return self.size if self.min_side is None else self.min_side

    @cached_property
    def urls(self) -> list[str]:
        return corpus_shards(self.corpus)

    @cached_property
    def stems(self) -> list[str]:
        """Output names' stems, one per input shard: the input shard's stem, with its index
        added where two input shards share one (``a/00000.tar``, ``b/00000.tar``)."""
        stems = [shard_stem(u) for u in self.urls]
        counts = Counter(stems)
        return [s if counts[s] == 1 else f"{s}-{i:06d}" for i, s in enumerate(stems)]

    @property
    def num_shards(self) -> int:
        return len(self.urls) * self.crops_per_image

    def output(self, index: int, round_: int) -> str:
        return output_name(index, self.stems[index], round_)

    def recipe(self) -> dict:
        recipe = {k: v for k, v in asdict(self).items() if k != "corpus"}
        recipe["sources"] = {
            "corpus": self.corpus,
            "input_shards": len(self.urls),
            "sha256": list_hash(self.urls),
        }
        recipe.update(sim_batch=SIM_BATCH, format_version=format_version(self.image_format))
        return finish_recipe(recipe)

    def recipe_hash(self) -> str:
        return recipe_hash(self.recipe())

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)  # workers get their URLs with each unit, not the list
        state.pop("urls", None)
        state.pop("stems", None)
        return state


def output_name(index: int, stem: str, round_: int) -> str:
    """Input shard ``index`` (output stem ``stem``)'s round ``round_``: ``GGGG/STEM-rK.tar``."""
    return f"{index // GROUP:04d}/{stem}-r{round_}.tar"


def _ident(stem: str, key: str) -> int:
    """A sample's identity as an integer for :func:`derive_seed`."""
    return int.from_bytes(
        hashlib.blake2b(f"{stem}/{key}".encode(), digest_size=8).digest(), "little"
    )


def build_input_shard(
    spec: CorpusSpec, index: int, url: str, stem: str, out: Path, todo: list[str]
) -> list[dict]:
    """Read input shard ``index`` once and write its rounds named in ``todo``; returns their
    sidecars. Raises :class:`UnitFailed` (nothing written) when the shard cannot be read."""
    names = {output_name(index, stem, k): k for k in range(spec.crops_per_image)}
    rounds = sorted(names[n] for n in todo)
    hygiene = Hygiene(min_side=spec.need_side, small=spec.small_images, dedupe=spec.dedupe)
    tally = SkipTally()
    simulator = make_simulator(spec)
    with deterministic(spec.device if spec.kind == "artifact" else "cpu"), ExitStack() as stack:
        files = {
            k: stack.enter_context(ShardFile(out, output_name(index, stem, k))) for k in rounds
        }
        writers = {k: SampleWriter(files[k], spec, simulator) for k in rounds}
        for image in corpus_images([url], hygiene, tally):
            pixels = torch.from_numpy(image.pixels).permute(2, 0, 1).float().div_(255)
            source = None if min(image.pixels.shape[:2]) < spec.size else (image.ext, image.data)
            ident = _ident(shard_stem(url), image.key)
            for k in rounds:
                generator = torch.Generator().manual_seed(derive_seed(spec.seed, ident, k))
                crop, origin = random_crop_with_origin(pixels, spec.size, generator)
                origin = {"source": url, "key": image.key, "round": k, "size": spec.size, **origin}
                key = f"{stem}_{image.key}_r{k}".replace(".", "_")  # a dot ends a key
                writers[k].add(Crop(key, crop, origin, generator, source))
        if tally.counts["read_error"]:
            raise UnitFailed(f"{url}: could not be read to its end (see the warning above)")
        skipped = Counter(tally.skipped)
        records = []
        for k in rounds:
            writers[k].flush()
            first = k == 0  # an input shard's skips are counted once, with its round 0
            records.append(files[k].finish(*((skipped, tally.examples) if first else (None, []))))
        return records


class CorpusJob(Job):
    """A corpus build as :func:`pixperfect.shards.tasks.run` runs it: one unit per input
    shard, ``(index, url, stem)``."""

    spec: CorpusSpec

    def names(self) -> list[str]:
        k = self.spec.crops_per_image
        return [self.spec.output(i, r) for i in range(len(self.spec.urls)) for r in range(k)]

    def units(self, task_index: int, num_tasks: int) -> list[tuple[int, str, str]]:
        spec = self.spec
        return [
            (i, spec.urls[i], spec.stems[i]) for i in range(task_index, len(spec.urls), num_tasks)
        ]

    def outputs(self, unit: tuple[int, str, str]) -> list[str]:
        return [output_name(unit[0], unit[2], k) for k in range(self.spec.crops_per_image)]

    def build_unit(self, unit: tuple[int, str, str], out: Path, todo: list[str]) -> list[dict]:
        index, url, stem = unit
        return build_input_shard(self.spec, index, url, stem, out, todo)

    def samples_of(self, names: list[str]) -> float:
        # Unknown before reading: taken as img2dataset's default shard size.
        return len(names) * IMG2DATASET_PER_SHARD

    def header(self) -> dict:
        return {**super().header(), "corpus": self.spec.corpus}


def build_corpus(
    spec: CorpusSpec,
    out: str | Path,
    workers: int = 1,
    task_index: int | None = None,
    num_tasks: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Build this task's missing output shards (see the module docstring); the summary and
    errors are :func:`pixperfect.shards.tasks.run`'s."""
    return run(CorpusJob(spec), out, workers, task_index, num_tasks, progress, device)


def _images_per_shard(url: str) -> int | None:
    """img2dataset's ``{stem}_stats.json`` beside a local input shard says how many samples
    it holds (a small file, not a shard); None for remote shards or without it."""
    if is_url(url) or url.startswith("pipe:"):
        return None
    stats = Path(url).with_name(f"{shard_stem(url)}_stats.json")
    try:
        return int(json.loads(stats.read_text())["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def dry_run(spec: CorpusSpec, out: str | Path, task_index: int, num_tasks: int) -> str:
    """The plan, as text: input shards, tasks, output shards (all and this task's), the
    output layout and an estimate of the bytes. Opens no input shard and writes nothing;
    memory and time grow with the number of input shards only."""
    validate_common(spec)
    urls, k = spec.urls, spec.crops_per_image
    n = len(urls)
    if not 0 <= task_index < num_tasks:
        raise InputError(f"--task-index {task_index} is outside 0..{num_tasks - 1} (--num-tasks)")
    mine = len(range(task_index, n, num_tasks))
    per_shard = _images_per_shard(urls[0])
    per_sample = BYTES_PER_PIXEL[(spec.kind, spec.image_format)] * spec.size**2
    counted = per_shard is not None
    per_shard = per_shard or IMG2DATASET_PER_SHARD
    total = per_sample * n * per_shard * k
    basis = (
        f"{per_shard} images per input shard (from {shard_stem(urls[0])}_stats.json)"
        if counted
        else f"if each input shard holds {per_shard} images (img2dataset's default; not read)"
    )
    last = spec.output(n - 1, k - 1)
    lines = [
        f"corpus: {spec.corpus}",
        f"input shards: {n} ({urls[0]} ... {urls[-1]})",
        f"tasks: {num_tasks}; task {task_index} takes input shards {task_index}, "
        f"{task_index}+{num_tasks}, ...: {mine} of them",
        f"output shards: {n * k} ({n} input shards x {k} crop round(s)), {mine * k} for "
        f"this task, as {Path(out) / spec.output(0, 0)} ... {last} "
        f"({-(-n // GROUP)} sub-folder(s))",
        f"recipe: {spec.kind} {spec.size}px, format {spec.image_format}, seed {spec.seed}, "
        f"hash {spec.recipe_hash()[:12]}",
        f"estimated bytes: ~{human(per_sample)} per sample (a typical figure for the format), "
        f"~{human(total)} in all and ~{human(total * mine / n)} for this task, {basis}",
        "dry run: no input shard opened, nothing written",
    ]
    return "\n".join(lines)
