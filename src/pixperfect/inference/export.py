"""Checkpoints in, deployable refiners out: ``pixperfect export CKPT OUT [--raw]``.

A training checkpoint holds the generator, its EMA, the discriminator, optimiser states
and the config. An export keeps only what inference needs, in a folder:

- ``model.safetensors``: the generator's weights only. The EMA weights by default when
  the checkpoint has them (``generator_ema.*``: what validation scored); ``--raw`` takes
  the live weights (``generator.*``). No discriminator, no optimiser state.
- ``config.yaml``: ``model:`` (the architecture ``from_pretrained`` builds) and
  ``training:`` (the run's whole resolved config, for the record).
- ``provenance.json``: the source checkpoint, its global step, which weights were taken,
  the parameter count and how to load the folder.

``Refiner.from_pretrained(OUT)`` loads it; it needs ``model.safetensors`` and
``config.yaml`` and names whichever is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from pixperfect.models import build_refiner

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"
EXPORT_COMMAND = "pixperfect export CKPT OUT"


def load_checkpoint(path: str | Path) -> dict:
    """A PixPerfect training checkpoint (Lightning ``.ckpt``), loaded on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train one with `pixperfect train` (it "
            "writes runs/<name>/checkpoints/last.ckpt)"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt.get("hyper_parameters", {}):
        raise ValueError(f"{path} is not a PixPerfect training checkpoint")
    return ckpt


def generator_state(ckpt: dict, ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The generator's state dict from a checkpoint and which weights it is: ``"ema"`` when
    ``ema`` and the run kept an EMA, ``"raw"`` otherwise."""
    state = ckpt["state_dict"]
    which = "ema" if ema and any(k.startswith("generator_ema.") for k in state) else "raw"
    prefix = "generator_ema." if which == "ema" else "generator."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError("the checkpoint holds no generator weights (generator.*)")
    return weights, which


def model_section(config: dict) -> dict:
    """The ``model`` section of a stored training config, with the schema's defaults filled
    in (older checkpoints may lack newer keys)."""
    from pixperfect.config import from_container

    return dict(from_container(config).model)


def build_model(model_cfg: dict) -> nn.Module:
    cfg = dict(model_cfg)
    return build_refiner(cfg.pop("name"), **cfg)


def export_checkpoint(ckpt_path: str | Path, out: str | Path, raw: bool = False) -> Path:
    """Write the export folder ``out`` (see the module docstring) from ``ckpt_path``."""
    ckpt_path, out = Path(ckpt_path), Path(out)
    ckpt = load_checkpoint(ckpt_path)
    config = ckpt["hyper_parameters"]["config"]
    model_cfg = model_section(config)
    weights, which = generator_state(ckpt, ema=not raw)
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
        "source_checkpoint": str(ckpt_path.resolve()),
        "global_step": int(ckpt.get("global_step", -1)),
        "weights": which,
        "weights_note": {
            "ema": "generator EMA (generator_ema.*), what validation scored",
            "raw": "live generator weights (generator.*)",
        }[which],
        "model": model_cfg["name"],
        "parameters": int(sum(v.numel() for v in weights.values())),
        "files": [WEIGHTS_FILE, CONFIG_FILE, PROVENANCE_FILE],
        "usage": (
            "from pixperfect.inference import Refiner; "
            f"Refiner.from_pretrained({str(out)!r})(image, mask)  |  "
            f"pixperfect refine --model {out} --image IMG --mask MASK --out OUT"
        ),
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def load_export(directory: str | Path) -> tuple[nn.Module, dict, dict]:
    """(model, training config, provenance) from an export folder; names a missing file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a folder; write one from a training checkpoint with "
            f"`{EXPORT_COMMAND}`"
        )
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory} has no {name}, so it is not a PixPerfect export; write one "
                f"from a training checkpoint with `{EXPORT_COMMAND}`"
            )
    stored = yaml.safe_load((directory / CONFIG_FILE).read_text()) or {}
    if not isinstance(stored.get("model"), dict) or "name" not in stored["model"]:
        raise ValueError(
            f"{directory / CONFIG_FILE} has no model section with a name; re-export with "
            f"`{EXPORT_COMMAND}`"
        )
    model = build_model(stored["model"])
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    provenance_path = directory / PROVENANCE_FILE
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return model, stored.get("training") or {}, provenance
