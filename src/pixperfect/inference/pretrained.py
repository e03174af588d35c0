"""The shipped reference refiner: its name and where its export folder is found.

``Refiner.from_pretrained()`` and ``pixperfect refine`` without ``--model``/``--ckpt`` use
the folder :func:`default_model_dir` returns, in this order:

1. ``$PIXPERFECT_MODEL``: any export folder (``pixperfect export``), e.g. a model you
   trained and want as your default;
2. ``weights/<DEFAULT_MODEL>/`` of the source tree this package runs from (a clone with
   ``pip install -e .``, where the reference weights are committed).

The weights are trained by ``make reference`` (configs/reference_cpu.yaml,
scripts/reference_model.py); their ``provenance.json`` holds the recipe, the training
photos' sources and licences and the Kodak table.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "pixperfect-unet-cpu-v2"
MODEL_ENV = "PIXPERFECT_MODEL"
# src/pixperfect/inference/pretrained.py -> the repository root
SOURCE_ROOT = Path(__file__).resolve().parents[3]


def default_model_dir() -> Path:
    """The export folder of the default refiner; refuses with where it looked and how to
    provide one when there is none."""
    chosen = os.environ.get(MODEL_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"${MODEL_ENV}={chosen} is not a folder; point it at a folder written by "
                "`pixperfect export CKPT OUT`, or unset it to use the shipped reference model"
            )
        return path
    path = SOURCE_ROOT / "weights" / DEFAULT_MODEL
    if not path.is_dir():
        raise FileNotFoundError(
            f"the shipped reference refiner is not at {path}: it is committed in the source "
            f"tree (weights/{DEFAULT_MODEL}/), which this installation does not include. "
            f"Clone the repository and `pip install -e .`, pass --model DIR (an export "
            f"folder), or set ${MODEL_ENV}=DIR"
        )
    return path
