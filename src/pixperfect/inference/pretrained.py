"""The shipped reference refiner: its name and where its export folder is found.

``Refiner.from_pretrained()`` and ``pixperfect refine`` without ``--model``/``--ckpt`` use
the folder :func:`default_model_dir` returns, in this order:

1. ``$PIXPERFECT_MODEL``: any export folder (``pixperfect export``), e.g. a model you
   trained and want as your default;
2. ``pixperfect/weights/<DEFAULT_MODEL>/`` inside the installed package: package data
   (:mod:`pixperfect.packaged`), in a wheel as in a checkout (``src/pixperfect/weights/``).

The weights are trained by ``make reference`` (configs/reference_cpu.yaml,
scripts/reference_model.py); their ``provenance.json`` holds the recipe, the training
photos' sources and licences and the Kodak table.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixperfect.errors import MissingAssetError
from pixperfect.packaged import WEIGHTS_DIR

DEFAULT_MODEL = "pixperfect-unet-cpu-v2"
MODEL_ENV = "PIXPERFECT_MODEL"
SHIPPED_MODEL_DIR = WEIGHTS_DIR / DEFAULT_MODEL


def default_model_dir() -> Path:
    """The export folder of the default refiner; refuses with where it looked and how to
    provide one when there is none."""
    chosen = os.environ.get(MODEL_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            raise MissingAssetError(
                f"${MODEL_ENV}={chosen} is not a folder; point it at a folder written by "
                "`pixperfect export CKPT OUT`, or unset it to use the shipped reference model"
            )
        return path
    path = SHIPPED_MODEL_DIR
    if not path.is_dir():
        raise MissingAssetError(
            f"the shipped reference refiner is not at {path}: it is package data of "
            f"pixperfect (pixperfect/weights/{DEFAULT_MODEL}/), missing from this "
            f"installation. Reinstall pixperfect from a wheel or a checkout that has it, "
            f"pass --model DIR (an export folder), or set ${MODEL_ENV}=DIR"
        )
    return path
