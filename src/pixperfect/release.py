"""Checkpoints in, deployable refiners out: ``pixperfect export CKPT OUT [--raw]``.

Above both inference (the folder format and its loader, :mod:`pixperfect.inference.export`)
and evaluation (the scores a release records).

A training checkpoint holds the generator, its EMA, the discriminator, optimiser states
and the config. An export keeps only what inference needs, in a folder:

- ``model.safetensors``: the generator's weights only. The EMA weights by default when
  the checkpoint has them (``generator_ema.*``: what validation scored); ``--raw`` takes
  the live weights (``generator.*``). No discriminator, no optimiser state.
- ``config.yaml``: ``model:`` (the architecture ``from_pretrained`` builds) and
  ``training:`` (the run's whole resolved config, for the record).
- ``provenance.json``: the source checkpoint, its global step, which weights were taken,
  the parameter count, how to load the folder, the recipe hash (the artifact shards'
  recipe and the training config, :func:`recipe_fingerprint`), the training photos'
  collections with their sources and licences, and, when given, an evaluation (its
  methods' means, the per-bucket table and the acceptance check) and extra fields.
- ``README.md``: the same for people, with the evaluation's tables.

``Refiner.from_pretrained(OUT)`` loads it; it needs ``model.safetensors`` and
``config.yaml`` and names whichever is missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from safetensors.torch import save_file

from pixperfect.data.sources import describe_sources
from pixperfect.evaluation.acceptance import check_acceptance, format_acceptance
from pixperfect.evaluation.breakdown import format_buckets
from pixperfect.inference.export import (
    CARD_FILE,
    CONFIG_FILE,
    PROVENANCE_FILE,
    WEIGHTS_FILE,
    build_model,
    generator_state,
    load_checkpoint,
    model_section,
)
from pixperfect.training.checkpoints import DATA_PROVENANCE_KEY


def _canonical_hash(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _shards_plan(config: dict) -> dict | None:
    """The shard folder's plan (recipe, recipe hash) of a run trained on shards, if found."""
    data = config.get("data") or {}
    if data.get("source") != "shards" or not data.get("shards"):
        return None
    plan = Path(data["shards"]) / "plan.json"
    return json.loads(plan.read_text()) if plan.is_file() else None


def data_record(ckpt: dict, config: dict) -> dict:
    """The data the weights were trained on: the checkpoint's ``data_provenance`` (location,
    remote or local, kind, recipe hash...: :func:`pixperfect.shards.match.data_provenance`),
    or, for a checkpoint older than that record, what its config and a local shard plan
    still say (``"reconstructed": true``)."""
    if isinstance(ckpt.get(DATA_PROVENANCE_KEY), dict):
        return ckpt[DATA_PROVENANCE_KEY]
    data = config.get("data") or {}
    source = data.get("source")
    location = {"shards": data.get("shards"), "corpus": data.get("corpus")}.get(
        source, data.get("images") if source == "folder" else source
    )
    plan = _shards_plan(config)
    return {
        "source": source,
        "location": location,
        "recipe_hash": plan.get("recipe_hash") if plan else None,
        "reconstructed": True,
    }


def recipe_fingerprint(config: dict, data: dict | None = None) -> dict:
    """What the weights were trained from, as hashes: ``training_config_hash`` (the resolved
    config minus ``run`` and the shard path: names and places, not the recipe),
    ``shards_recipe_hash`` (the shards' own recipe hash: from ``data``, the checkpoint's
    :func:`data_record`, when it has one, else from a local shard plan; None when the run
    did not train on shards or they are gone) and ``hash`` over both."""
    recipe = {k: v for k, v in config.items() if k != "run"}
    recipe["data"] = {k: v for k, v in (config.get("data") or {}).items() if k != "shards"}
    shards_hash = (data or {}).get("recipe_hash")
    if shards_hash is None:
        plan = _shards_plan(config)
        shards_hash = plan.get("recipe_hash") if plan else None
    fingerprint = {
        "training_config_hash": _canonical_hash(recipe),
        "shards_recipe_hash": shards_hash,
    }
    fingerprint["hash"] = _canonical_hash(fingerprint)
    return fingerprint


def training_photos(config: dict) -> list[dict]:
    """The training photos' collections (count, source, licence) from the run's shard plan;
    empty when the plan cannot be found."""
    plan = _shards_plan(config)
    return describe_sources(plan["recipe"].get("sources", [])) if plan else []


def evaluation_summary(results: dict, command: str | None = None) -> dict:
    """The part of a ``pixperfect evaluate`` result a release keeps: the setting, each
    method's means, the per-bucket table and the acceptance check of the refiner."""
    summary = {
        "command": command,
        "dataset": results.get("dataset"),
        "photos": results.get("photos"),
        "samples": results.get("samples"),
        "seed": results.get("seed"),
        "band_width": results.get("band_width"),
        "methods": results["methods"],
        "buckets": results.get("buckets"),
        "skipped": results.get("skipped"),
    }
    if "refiner" in results["methods"] and "identity" in results["methods"]:
        summary["acceptance"] = check_acceptance(results)
    return summary


def export_checkpoint(
    ckpt_path: str | Path,
    out: str | Path,
    raw: bool = False,
    *,
    name: str | None = None,
    evaluation: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the export folder ``out`` (see the module docstring) from ``ckpt_path``.
    ``name``: the model's name (default: the folder's); ``evaluation``: an
    :func:`evaluation_summary`; ``extra``: further provenance fields (e.g. timings)."""
    ckpt_path, out = Path(ckpt_path), Path(out)
    ckpt = load_checkpoint(ckpt_path)
    config = ckpt["hyper_parameters"]["config"]
    model_cfg = model_section(config)
    weights, which = generator_state(ckpt, ema=not raw)
    data = data_record(ckpt, config)
    build_model(model_cfg).load_state_dict(weights)  # refuse weights that do not fit
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(
        "# Written by `pixperfect export`. model: what Refiner.from_pretrained builds;\n"
        "# training: the resolved config of the run the weights come from.\n"
        + yaml.safe_dump({"model": model_cfg, "training": config}, sort_keys=False)
    )
    provenance = {
        "format": "pixperfect-refiner/1",
        "name": name or out.resolve().name,
        "source_checkpoint": str(ckpt_path.resolve()),
        "global_step": int(ckpt.get("global_step", -1)),
        "weights": which,
        "weights_note": {
            "ema": "generator EMA (generator_ema.*), what validation scored",
            "raw": "live generator weights (generator.*)",
        }[which],
        "model": model_cfg["name"],
        "parameters": int(sum(v.numel() for v in weights.values())),
        "files": [WEIGHTS_FILE, CONFIG_FILE, PROVENANCE_FILE, CARD_FILE],
        "recipe": recipe_fingerprint(config, data),
        "data": data,
        "training_photos": training_photos(config),
        "usage": (
            "from pixperfect.inference import Refiner; "
            f"Refiner.from_pretrained({str(out)!r})(image, mask)  |  "
            f"pixperfect refine --model {out} --image IMG --mask MASK --out OUT"
        ),
    }
    if evaluation is not None:
        provenance["evaluation"] = evaluation
    provenance.update(extra or {})
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    (out / CARD_FILE).write_text(model_card(provenance))
    return out


def _describe_data(data: dict) -> str:
    """One line of the model card on the training data: what, where, its recipe hash."""
    where = "remote" if data.get("remote") else "local"
    kind = data.get("kind") or data.get("source")
    what = f"{kind} shards" if data.get("source") == "shards" else f"{kind}"
    text = f"{what} at `{data.get('location')}` ({where})"
    if data.get("num_samples"):
        text += f", {data['num_samples']} samples"
    if data.get("size"):
        text += f" of {data['size']} px"
    text += f"; recipe hash `{data.get('recipe_hash') or 'n/a'}`"
    if data.get("sim_version") is not None:
        text += f", simulator version {data['sim_version']}"
    if data.get("reconstructed"):
        text += " (from the config: the checkpoint predates the data record)"
    validation = data.get("validation")
    if isinstance(validation, dict):
        text += f". Validation: {validation.get('source')}, {validation.get('artifacts')}"
    return text + "."


def model_card(provenance: dict) -> str:
    """``README.md`` of an export folder: the provenance for people."""
    p = provenance
    lines = [
        f"# {p['name']}",
        "",
        f"A PixPerfect refiner ({p['model']}, {p['parameters']:,} parameters, "
        f"{p['weights_note']}, step {p['global_step']}), written by `pixperfect export`.",
        "",
        f"Use: `{p['usage']}`",
        "",
        f"Recipe hash: `{p['recipe']['hash']}` (training config "
        f"`{p['recipe']['training_config_hash'][:16]}`, artifact shards "
        f"`{(p['recipe']['shards_recipe_hash'] or 'n/a')[:16]}`; the full config is in "
        f"{CONFIG_FILE}).",
    ]
    if p.get("data"):
        lines += ["", f"Training data: {_describe_data(p['data'])}"]
    if p.get("training_photos"):
        lines += ["", "## Training photos", "", "| collection | photos | source | licence |"]
        lines += ["|---|---:|---|---|"]
        lines += [
            f"| {c['collection']} | {c['photos']} | {c['source']} | {c['licence']} |"
            for c in p["training_photos"]
        ]
        lines += [
            "",
            "Terms as the collections are commonly distributed, not checked file by file: "
            "check them before any commercial use of these weights.",
        ]
    evaluation = p.get("evaluation")
    if evaluation:
        lines += ["", "## Evaluation", ""]
        if evaluation.get("command"):
            lines += [f"`{evaluation['command']}`", ""]
        lines += [f"{evaluation['samples']} samples from {evaluation['photos']} photos.", ""]
        metrics = ("band_psnr", "band_ciede2000", "seam_grad", "harm_rate", "band_psnr_gain")
        lines += ["| method | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
        for method, scores in evaluation["methods"].items():
            cells = ["-" if scores.get(m) is None else f"{scores[m]:.3f}" for m in metrics]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if evaluation.get("buckets"):
            lines += ["", format_buckets(evaluation["buckets"], markdown=True)]
        if evaluation.get("acceptance"):
            lines += ["", "### Acceptance: the bar a shipped refiner must clear", ""]
            lines += [format_acceptance(evaluation["acceptance"], markdown=True)]
    for key in ("training", "shards"):
        if key in p:
            lines += ["", f"{key}: `{json.dumps(p[key])}`"]
    return "\n".join(lines) + "\n"
