"""What ships inside the package: the default config layer and the shipped refiner.

Both are package data (``[tool.setuptools.package-data]`` in pyproject.toml), found beside
this file, so a wheel installed anywhere has them as a checkout does:

- ``pixperfect/defaults.yaml``: every config key with its default, the first layer under
  every experiment file (:func:`pixperfect.config.load_config`);
- ``pixperfect/weights/<name>/``: export folders of shipped refiners, the default one of
  ``Refiner.from_pretrained()`` and ``pixperfect refine`` (:mod:`pixperfect.inference.pretrained`).

In a checkout they are ``src/pixperfect/defaults.yaml`` and ``src/pixperfect/weights/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULTS_FILE = PACKAGE_DIR / "defaults.yaml"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
