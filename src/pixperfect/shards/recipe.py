"""What a shard build's bytes depend on (its recipe), and ``plan.json``, which guards a folder
against a second recipe.

A recipe names its sources by a summary, never by a list: a folder build's photos by count,
a sha256 of their paths and a count per collection (for provenance,
:func:`pixperfect.data.sources.describe_sources`); a corpus build's by its pattern, the
number of input shards and a sha256 of their URLs. So ``plan.json`` and ``manifest.json``
stay the same small size for 10^2 photos or 10^8 images.

:class:`BuildSpec` is the recipe of a build from photos (a folder, a list file or
``skimage``); :class:`pixperfect.shards.corpus_build.CorpusSpec` the one of a corpus build.
Both give :meth:`recipe`, :meth:`recipe_hash` and output shard names, which is all
:func:`check_plan` needs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from data_sim import SIM_VERSION
from data_sim.simulator import SimConfig
from pixperfect.data.sources import collection_of
from pixperfect.errors import InputError
from pixperfect.shards.format import FORMATS, KINDS

MANIFEST = "manifest.json"
PLAN = "plan.json"
SMALL_IMAGES = ("skip", "upscale")  # data.small_images: the first is the default
SIM_BATCH = 16  # samples simulated together; part of the recipe (noise draws depend on it)
DEVICE_KINDS = ("cpu", "cuda")  # where a build simulates: part of the recipe
DEVICES = ("auto", *DEVICE_KINDS)  # --device: auto resolves to a kind


def shard_name(index: int) -> str:
    """A photo build's ``index``-th output shard (one flat folder, as always)."""
    return f"shard-{index:06d}.tar"


def list_hash(items: Sequence[str]) -> str:
    """sha256 of the items one per line: names a list in a recipe without storing it."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def sources_summary(sources: Sequence[str]) -> dict:
    """A photo list in a recipe: ``count``, ``sha256`` (of the paths in order) and
    ``collections`` (photos per collection, as provenance reports them)."""
    return {
        "count": len(sources),
        "sha256": list_hash(sources),
        "collections": dict(Counter(collection_of(s) for s in sources)),
    }


def format_version(image_format: str) -> int:
    """1: every image stored losslessly as pixels; 2: the target may be the source's own
    bytes plus a crop box (``--format source``); 3: AVIF images (``--format avif``). Readers
    before a version cannot decode it."""
    return {"source": 2, "avif": 3}.get(image_format, 1)


@dataclass
class BuildSpec:
    """Everything a photo build's shard bytes depend on (the recipe), plus the photo list."""

    sources: list[str]  # file paths, or "skimage:<name>" for scikit-image's photos
    kind: str = "artifact"
    size: int = 128
    crops_per_image: int = 8
    shard_size: int = 256
    seed: int = 0
    image_format: str = "png"
    small_images: str = "upscale"
    sim: dict = field(default_factory=dict)  # SimConfig as a plain dict (artifact shards)
    device: str = "cpu"  # the kind that simulates, cpu or cuda (resolve_device turns auto)
    min_side: int | None = None  # shorter side a photo needs; None: the crop size

    def validate(self) -> None:
        validate_common(self)
        if self.image_format == "source":
            raise InputError(
                "--format source stores each sample's source bytes: it is for corpus builds "
                "(--images PATTERN of tar shards); photo folders take png or webp"
            )
        if not self.sources:
            raise InputError("no source images")

    @property
    def need_side(self) -> int:
        return self.size if self.min_side is None else self.min_side

    def recipe(self) -> dict:
        recipe = {k: v for k, v in asdict(self).items() if k != "sources"}
        recipe["sources"] = self.sources_summary
        recipe.update(sim_batch=SIM_BATCH, format_version=format_version(self.image_format))
        return finish_recipe(recipe)

    def recipe_hash(self) -> str:
        return recipe_hash(self.recipe())

    @cached_property
    def sources_summary(self) -> dict:
        return sources_summary(self.sources)

    @cached_property
    def order(self) -> list[int]:
        """The photos' seeded order (a shard is not one folder's subject), computed once."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(len(self.sources), generator=generator).tolist()

    @property
    def num_shards(self) -> int:
        return math.ceil(len(self.sources) * self.crops_per_image / self.shard_size)

    @property
    def num_samples(self) -> int:
        return len(self.sources) * self.crops_per_image

    def shard_samples(self, index: int) -> list[tuple[int, int]]:
        """(source index, crop index) of shard ``index``'s samples: a photo's crops together
        (each photo is decoded once per shard). O(shard size), the order cached."""
        start = index * self.shard_size
        stop = min(start + self.shard_size, self.num_samples)
        cpi = self.crops_per_image
        return [(self.order[k // cpi], k % cpi) for k in range(start, stop)]

    def shard_names(self) -> list[str]:
        return [shard_name(i) for i in range(self.num_shards)]

    def __getstate__(self) -> dict:
        # Pickled once per worker process: the cached order and summary are recomputed there.
        state = dict(self.__dict__)
        state.pop("order", None)
        state.pop("sources_summary", None)
        return state


def validate_common(spec) -> None:
    """Checks every recipe shares (``kind``, ``image_format``, sizes, device)."""
    if spec.kind not in KINDS:
        raise InputError(f"--kind {spec.kind!r}: choose one of {', '.join(KINDS)}")
    if spec.image_format not in FORMATS:
        raise InputError(f"--format {spec.image_format!r}: choose one of {', '.join(FORMATS)}")
    if spec.small_images not in SMALL_IMAGES:
        raise InputError(
            f"data.small_images={spec.small_images!r}: choose one of {', '.join(SMALL_IMAGES)}"
        )
    for name in ("size", "crops_per_image", "shard_size"):
        if getattr(spec, name, 1) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if spec.min_side is not None and spec.min_side < 1:
        raise InputError(f"--min-side {spec.min_side} must be >= 1")
    if spec.device not in DEVICE_KINDS:
        raise ValueError(
            f"device {spec.device!r}: a device kind, cpu or cuda (resolve_device turns "
            "--device auto into one)"
        )


def finish_recipe(recipe: dict) -> dict:
    """The simulator's version for artifact shards; no device for clean ones (nothing is
    simulated, so the device cannot change their bytes)."""
    if recipe["kind"] == "artifact":
        recipe["sim_version"] = SIM_VERSION
    else:
        recipe.pop("device", None)
    return recipe


def recipe_hash(recipe: dict) -> str:
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_device(device: str) -> str:
    """``--device`` to the device kind that simulates: ``auto`` is cuda when CUDA is available,
    else cpu; ``cuda`` without CUDA and unknown names are refused (ValueError)."""
    if device not in DEVICES:
        raise InputError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: CUDA is not available here (torch.cuda.is_available() is False); "
            "use --device cpu (or auto), or run on a machine with a GPU"
        )
    return device


@contextmanager
def deterministic(device: str) -> Iterator[None]:
    """On cuda: deterministic algorithms and no cuDNN autotuning inside, the caller's settings
    restored on exit; ``CUBLAS_WORKSPACE_CONFIG`` defaults to ``:4096:8`` (and stays set).
    On cpu: nothing to do."""
    if device != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def sim_from_dict(sim: dict) -> SimConfig:
    """The recipe's plain-dict simulation section back to the typed config."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SimConfig), sim))


def _as_stored(recipe: dict) -> dict:
    """A recipe as an older plan may have stored it, in today's terms: the device (artifact
    plans before it was recorded were built on the CPU), ``min_side`` (None before the
    option), and the photo list as its summary (plans before summaries listed every path)."""
    recipe = json.loads(json.dumps(recipe))  # tuples in the config are lists on disk
    if recipe.get("kind") == "artifact":
        recipe.setdefault("device", "cpu")
    if "crops_per_image" in recipe and "corpus" not in recipe:
        recipe.setdefault("min_side", None)
    if isinstance(recipe.get("sources"), list):
        recipe["sources"] = sources_summary(recipe["sources"])
    return recipe


def check_plan(spec, out: Path, write) -> None:
    """Refuse to mix recipes in one folder; record the recipe on first use (``write(path,
    text)`` writes a file atomically). A plan of an older version that describes the same
    recipe is taken as it is."""
    plan = {"recipe": spec.recipe(), "recipe_hash": spec.recipe_hash(), "shards": spec.num_shards}
    path = out / PLAN
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("recipe_hash") == plan["recipe_hash"]:
            return
        recipe, before = _as_stored(plan["recipe"]), _as_stored(old.get("recipe", {}))
        changed = sorted(k for k in recipe.keys() | before.keys() if before.get(k) != recipe.get(k))
        if not changed:  # such an old plan, same recipe otherwise
            return
        if "device" in changed and before.get("device") and recipe.get("device"):
            others = [k for k in changed if k != "device"]
            also = f" (the recipe also differs in: {', '.join(others)})" if others else ""
            raise InputError(
                f"{out} holds shards built on {before['device']}, this build runs on "
                f"{recipe['device']}: the simulation's random noise differs between device "
                f"kinds; build on {before['device']} (--device {before['device']}) or use a "
                f"new --out{also}"
            )
        why = (
            " (built by another version of the artifact simulator, data_sim.SIM_VERSION)"
            if "sim_version" in changed
            else ""
        )
        raise InputError(
            f"{out} holds shards of another recipe (differs in: {', '.join(changed)}){why}; "
            "use a new --out, or delete the folder to rebuild"
        )
    write(path, json.dumps(plan, indent=1, sort_keys=True))
