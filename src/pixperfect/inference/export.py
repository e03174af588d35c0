"""The export folder (what ``pixperfect export`` writes, :mod:`pixperfect.release`) and
loading it, and the generator in a training checkpoint.

An export folder holds ``model.safetensors`` (the generator's weights only), ``config.yaml``
(``model:``, the architecture ``from_pretrained`` builds, and ``training:``, the run's
resolved config), ``provenance.json`` and ``README.md``. ``Refiner.from_pretrained(OUT)``
loads it (:func:`load_export`); it needs ``model.safetensors`` and ``config.yaml`` and names
whichever is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from pixperfect.errors import InputError, MissingFileError
from pixperfect.models import build_refiner
from pixperfect.models.model_config import filled_model_section

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"
CARD_FILE = "README.md"
EXPORT_COMMAND = "pixperfect export CKPT OUT"


def load_checkpoint(path: str | Path) -> dict:
    """A PixPerfect training checkpoint (Lightning ``.ckpt``), loaded on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint {path} does not exist; train one with `pixperfect train` (it "
            "writes runs/<name>/checkpoints/last.ckpt)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, corrupt, not a torch file: name the file, not torch
        raise InputError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "config" not in ckpt.get("hyper_parameters", {}):
        raise InputError(f"{path} is not a PixPerfect training checkpoint")
    return ckpt


def generator_state(ckpt: dict, ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The generator's state dict from a checkpoint and which weights it is: ``"ema"`` when
    ``ema`` and the run kept an EMA, ``"raw"`` otherwise."""
    state = ckpt["state_dict"]
    which = "ema" if ema and any(k.startswith("generator_ema.") for k in state) else "raw"
    prefix = "generator_ema." if which == "ema" else "generator."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise InputError("the checkpoint holds no generator weights (generator.*)")
    return weights, which


def model_section(config: dict) -> dict:
    """The ``model`` section of a stored training config, with the schema's defaults filled
    in (older checkpoints may lack newer keys)."""
    return filled_model_section(config.get("model") or {})


def build_model(model_cfg: dict) -> nn.Module:
    cfg = dict(model_cfg)
    return build_refiner(cfg.pop("name"), **cfg)


def load_export(directory: str | Path) -> tuple[nn.Module, dict, dict]:
    """(model, training config, provenance) from an export folder; names a missing file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError(
            f"{directory} is not a folder; write one from a training checkpoint with "
            f"`{EXPORT_COMMAND}`"
        )
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise MissingFileError(
                f"{directory} has no {name}, so it is not a PixPerfect export; write one "
                f"from a training checkpoint with `{EXPORT_COMMAND}`"
            )
    stored = yaml.safe_load((directory / CONFIG_FILE).read_text()) or {}
    if not isinstance(stored.get("model"), dict) or "name" not in stored["model"]:
        raise InputError(
            f"{directory / CONFIG_FILE} has no model section with a name; re-export with "
            f"`{EXPORT_COMMAND}`"
        )
    model = build_model(stored["model"])
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    provenance_path = directory / PROVENANCE_FILE
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return model, stored.get("training") or {}, provenance
