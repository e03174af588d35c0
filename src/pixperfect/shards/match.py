"""Whether shards fit the run that reads them, and what a run records about its data.

This module owns the comparison of a shard manifest (:func:`pixperfect.shards.locations.
resolve`) with the resolved config of a training run, and the run's data provenance.
``pixperfect train`` and ``pixperfect preflight`` both call it, before anything trains.

A contradiction is named with both values and what to do about it::

    crop size: shards 64 px, config data.crop_size=32; fix: data.crop_size=64, or rebuild ...

Checked, for ``data.shards`` (``role="training"``) and ``data.val_shards``
(``role="validation"``):

- the crop size against ``data.crop_size`` (validation: ``data.val_crop_size``);
- the shard format version (``recipe.format_version``, written by the builder) against the
  versions this pixperfect reads (:func:`readable_format_versions`);
- artifact shards: the simulator version (``recipe.sim_version``) against this code's
  ``data_sim.SIM_VERSION``; clean shards record none and depend on none;
- training on artifact shards: the artifact recipe (``recipe.sim``, defaults filled in)
  against the config's ``sim`` section, key by key, so that the run's config, its
  validation (held-out photos simulated with the config's ``sim``) and its record say what
  the network was trained on. Keys that name where files are (:data:`LOCATION_KEYS`) are
  not compared. Validation shards may follow another recipe (a fixed benchmark set):
  their differences are notes, not contradictions;
- validation shards must carry artifacts (validation scores refinements of composites).

A shard pattern without ``manifest.json`` gives only its kind and sample size: the size is
checked, the rest is listed as unchecked (a warning, not a refusal).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from data_sim import SIM_VERSION
from pixperfect.errors import InputError
from pixperfect.shards.locations import is_url

log = logging.getLogger(__name__)

# sim keys that say where files are, not what the simulation does: the same codec weights
# or mask files sit under other paths on another machine.
LOCATION_KEYS = ("texture.vae.path", "mask.mask_dir")
MAX_LISTED_KEYS = 8  # differing sim keys named one by one; the rest are counted
REBUILD = "rebuild the shards with this run's config (pixperfect shards build --config ...)"


@dataclass
class Contradiction:
    """One way the shards contradict the run: ``what`` differs, with both values."""

    what: str
    shards: object
    config: object
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: shards {self.shards}, config {self.config}; fix: {self.fix}"


@dataclass
class Match:
    """The comparison of one shard location with the run (see the module docstring)."""

    location: str
    role: str  # training | validation
    contradictions: list[Contradiction] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # what could not be checked, why
    notes: list[str] = field(default_factory=list)  # differences that are allowed

    @property
    def ok(self) -> bool:
        return not self.contradictions

    def describe(self) -> str:
        lines = [f"{self.role} shards {self.location} do not match this run:"]
        lines += [f"  - {c}" for c in self.contradictions]
        return "\n".join(lines)


class ShardMismatch(InputError):
    """Shards whose recipe contradicts the run's config; the message lists every
    contradiction with both values and the fix."""

    def __init__(self, matches: list[Match]) -> None:
        self.matches = matches
        super().__init__("\n".join(m.describe() for m in matches if not m.ok))


@functools.cache
def readable_format_versions() -> tuple[int, ...]:
    """The shard format versions this pixperfect reads: every ``recipe.format_version`` its
    own builder writes, for each image format (:data:`pixperfect.shards.format.FORMATS`).
    Builder and reader ship together, so shards of a format newer than both are refused."""
    from pixperfect.shards.build import BuildSpec
    from pixperfect.shards.format import FORMATS

    written = {BuildSpec(["-"], image_format=f).recipe()["format_version"] for f in FORMATS}
    return tuple(sorted(written))


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _override(value: object) -> str:
    """``value`` as the right-hand side of a ``key=value`` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def config_sim(cfg: DictConfig) -> dict:
    """The run's ``sim`` section as a plain dict (what the builder records as recipe.sim)."""
    return OmegaConf.to_container(cfg.sim, resolve=True)  # type: ignore[return-value]


def recipe_sim(sim: dict) -> dict:
    """A recipe's ``sim`` section with this simulator's defaults filled in (the builder
    simulates with exactly that: ``build.sim_from_dict``); raises ValueError for keys this
    simulator does not know."""
    from data_sim.simulator import SimConfig

    try:
        merged = OmegaConf.merge(OmegaConf.structured(SimConfig), sim)
    except Exception as e:  # omegaconf's errors: an unknown key, a wrong type
        raise InputError(str(e).splitlines()[0]) from None
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def sim_differences(shards_sim: dict, cfg_sim: dict) -> list[tuple[str, object, object]]:
    """``(sim.key, shards value, config value)`` of every leaf that differs, location keys
    (:data:`LOCATION_KEYS`) left out."""
    a, b = _flatten(recipe_sim(shards_sim)), _flatten(recipe_sim(cfg_sim))
    return [
        (f"sim.{k}", a.get(k), b.get(k))
        for k in sorted(a.keys() | b.keys())
        if k not in LOCATION_KEYS and a.get(k) != b.get(k)
    ]


def compare(manifest: dict, cfg: DictConfig, role: str = "training") -> Match:
    """How the shards of ``manifest`` (a resolved manifest) fit the run of ``cfg`` as its
    ``role`` (training or validation) data; see the module docstring."""
    match = Match(str(manifest.get("location")), role)
    bad = match.contradictions.append
    size_key = "data.crop_size" if role == "training" else "data.val_crop_size"
    want = OmegaConf.select(cfg, size_key)
    size = manifest.get("size")
    if size is not None and int(size) != int(want):
        bad(Contradiction(
            "crop size", f"{size} px", f"{size_key}={want}",
            f"{size_key}={size}, or rebuild the shards with --size {want}",
        ))  # fmt: skip
    kind = manifest.get("kind")
    if role == "validation" and kind != "artifact":
        bad(Contradiction(
            "kind", kind, "artifact (data.val_shards: validation refines composites)",
            "rebuild them with --kind artifact, or unset data.val_shards (held-out photos)",
        ))  # fmt: skip
    recipe = manifest.get("recipe")
    if not isinstance(recipe, dict):
        match.unchecked.append(
            "shard format version, simulator version and artifact recipe: "
            f"{match.location} has no manifest recipe (a shard pattern without "
            "manifest.json gives only kind and size)"
        )
        return match
    fmt = recipe.get("format_version")
    if fmt is None:
        match.unchecked.append("shard format version: the manifest records none")
    elif fmt not in readable_format_versions():
        bad(Contradiction(
            "shard format version", fmt,
            f"{' or '.join(map(str, readable_format_versions()))} (what this pixperfect reads)",
            f"{REBUILD}, or train with a pixperfect that reads format {fmt} (they were "
            f"built by pixperfect {manifest.get('version', '?')})",
        ))  # fmt: skip
    if kind != "artifact":
        return match  # clean crops depend on no simulator
    sim_version = recipe.get("sim_version")
    if sim_version is None:
        match.unchecked.append("simulator version: the manifest records none")
    elif sim_version != SIM_VERSION:
        bad(Contradiction(
            "simulator version (data_sim.SIM_VERSION)", sim_version, SIM_VERSION,
            f"rebuild the shards with this pixperfect's simulator (pixperfect shards build "
            f"--config ...), or train with the simulator that built them (data_sim "
            f"SIM_VERSION {sim_version})",
        ))  # fmt: skip
        return match  # another simulator's parameters are not comparable key by key
    if "sim" not in recipe:
        match.unchecked.append("artifact recipe: the manifest records no sim section")
        return match
    _compare_sim(recipe["sim"], cfg, match)
    return match


def _compare_sim(shards_sim: dict, cfg: DictConfig, match: Match) -> None:
    try:
        diffs = sim_differences(shards_sim, config_sim(cfg))
    except ValueError as e:
        match.contradictions.append(Contradiction(
            "artifact recipe", f"a sim section this simulator does not read ({e})",
            "this simulator's sim section", REBUILD,
        ))  # fmt: skip
        return
    if not diffs:
        return
    if match.role == "validation":  # a fixed validation set may follow its own recipe
        keys = ", ".join(k for k, _, _ in diffs[:MAX_LISTED_KEYS])
        more = f" and {len(diffs) - MAX_LISTED_KEYS} more" if len(diffs) > MAX_LISTED_KEYS else ""
        match.notes.append(
            f"validation scores the artifacts of {match.location}'s own recipe, which differs "
            f"from the config's sim in {keys}{more}"
        )
        return
    for key, shards_value, config_value in diffs[:MAX_LISTED_KEYS]:
        match.contradictions.append(Contradiction(
            f"artifact recipe {key}", _override(shards_value), _override(config_value),
            f"{key}={_override(shards_value)}, or {REBUILD}",
        ))  # fmt: skip
    if len(diffs) > MAX_LISTED_KEYS:
        rest = ", ".join(k for k, _, _ in diffs[MAX_LISTED_KEYS:])
        match.contradictions.append(Contradiction(
            f"artifact recipe, {len(diffs) - MAX_LISTED_KEYS} more keys ({rest})",
            "the recipe's values", "other values",
            f"train with the config the shards were built with, or {REBUILD}",
        ))  # fmt: skip


def is_remote(location: str) -> bool:
    """A location read over the network (http, s3, pipe:...), not a local path or file://."""
    return is_url(location) and not location.startswith("file://")


def _absolute(location: str) -> str:
    return location if is_url(location) else str(Path(location).absolute())


def shards_provenance(manifest: dict) -> dict:
    """What a run records about shards it read: where (the manifest, or the pattern),
    whether remote, their kind, recipe hash, simulator and format versions, sample count."""
    recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    location = _absolute(str(manifest.get("location")))
    return {
        "location": location,
        "remote": is_remote(location),
        "kind": manifest.get("kind"),
        "recipe_hash": manifest.get("recipe_hash"),
        "sim_version": recipe.get("sim_version"),
        "format_version": recipe.get("format_version"),
        "size": manifest.get("size"),
        "num_samples": manifest.get("num_samples"),
        "built_by": manifest.get("version"),
    }


def data_provenance(
    cfg: DictConfig, manifest: dict | None = None, val_manifest: dict | None = None
) -> dict:
    """The run's data, for its checkpoints and exports: ``source``, ``location``,
    ``remote``, ``kind``, ``recipe_hash`` (None where the data has no recipe: photos, a
    corpus read where it is, a pattern without manifest)..., and ``validation``: where the
    validation samples come from and which recipe made their artifacts."""
    d = cfg.data
    if d.source == "shards" and manifest is not None:
        record = {"source": "shards", **shards_provenance(manifest)}
    elif d.source == "corpus":
        corpus = str(d.corpus)
        record = {"source": "corpus", "kind": "corpus", "location": _absolute(corpus)}
        record["remote"] = is_remote(corpus)
        record["recipe_hash"] = None
    elif d.source == "folder":
        record = {"source": "folder", "kind": "photos", "location": _absolute(str(d.images))}
        record |= {"remote": False, "recipe_hash": None}
    else:
        record = {"source": str(d.source), "kind": "photos", "location": str(d.source)}
        record |= {"remote": False, "recipe_hash": None}
    if val_manifest is not None:
        record["validation"] = {"source": "val_shards", **shards_provenance(val_manifest)}
        record["validation"]["artifacts"] = "the validation shards' own recipe"
    else:
        record["validation"] = {
            "source": "held-out photos",
            "holdout": list(d.holdout) if d.source != "folder" else _absolute(str(d.val_images)),
            "artifacts": f"simulated with the config's sim (data_sim.SIM_VERSION {SIM_VERSION})",
        }
    return record


def validation_statement(cfg: DictConfig, training: Match | None, manifest: dict | None) -> str:
    """One line on which recipe the validation artifacts follow, against the training
    data's (said at launch, so a run on artifact shards never compares unlike recipes
    without a word)."""
    d = cfg.data
    if d.val_shards:
        return f"validation: data.val_shards={d.val_shards}, artifacts of their own recipe"
    if manifest is None or manifest.get("kind") != "artifact":
        return "validation: held-out photos, artifacts simulated with the config's sim"
    if training is not None and isinstance(manifest.get("recipe"), dict) and training.ok:
        return (
            "validation: held-out photos, artifacts simulated with the config's sim, which "
            f"is the training shards' recipe (checked; recipe hash "
            f"{str(manifest.get('recipe_hash'))[:12]})"
        )
    return (
        "validation: held-out photos, artifacts simulated with the config's sim, NOT "
        f"necessarily the training shards' recipe: {manifest.get('location')} records none "
        "(a shard pattern without manifest.json)"
    )


def check_run_data(
    cfg: DictConfig, manifest: dict | None = None, val_manifest: dict | None = None
) -> dict:
    """Before a run trains: compare ``data.shards`` (``manifest``, resolved here when not
    given) and ``data.val_shards`` with the config, raise :class:`ShardMismatch` naming
    every contradiction, log what could not be checked and which recipe validation uses;
    returns the run's :func:`data_provenance`."""
    from pixperfect.shards.locations import resolve

    d = cfg.data
    matches: list[Match] = []
    training = None
    if d.source == "shards":
        manifest = manifest if manifest is not None else resolve(d.shards)
        training = compare(manifest, cfg, "training")
        matches.append(training)
    else:
        manifest = None
    if d.val_shards:
        val_manifest = val_manifest if val_manifest is not None else resolve(d.val_shards)
        matches.append(compare(val_manifest, cfg, "validation"))
    if any(not m.ok for m in matches):
        raise ShardMismatch(matches)
    for m in matches:
        for line in m.unchecked:
            log.warning("%s shards %s: not checked: %s", m.role, m.location, line)
        for line in m.notes:
            log.warning("%s", line)
    log.info("%s", validation_statement(cfg, training, manifest))
    return data_provenance(cfg, manifest, val_manifest)
