"""The committed reference refiner (src/pixperfect/weights/pixperfect-unet-cpu-v2, package
data): small, documented, the default of ``refine`` and ``Refiner.from_pretrained()``, and
safe outside the edit."""

from __future__ import annotations

import re

import numpy as np
import torch

from pixperfect.inference import Refiner
from pixperfect.inference.pretrained import DEFAULT_MODEL, SHIPPED_MODEL_DIR

SHIPPED = SHIPPED_MODEL_DIR


def test_the_shipped_refiner_is_committed_small_documented_and_the_default():
    assert SHIPPED.is_dir(), f"{SHIPPED} is missing: train and export it with `make reference`"
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 20 * 2**20, f"{size / 2**20:.1f} MB: a release must stay under 20 MB"
    refiner = Refiner.from_pretrained()
    p = refiner.provenance
    assert p["name"] == DEFAULT_MODEL and refiner.weights == "ema"
    assert re.fullmatch(r"[0-9a-f]{64}", p["recipe"]["hash"]) and p["recipe"]["shards_recipe_hash"]
    photos = {c["collection"]: c["photos"] for c in p["training_photos"]}
    assert sum(photos.values()) == 315 and "urban100" in photos
    assert all(not c["licence"].startswith("unknown") for c in p["training_photos"])
    evaluation = p["evaluation"]
    assert evaluation["photos"] == 24 and evaluation["samples"] == 24 * 8
    assert {"identity", "reinhard", "poisson", "refiner"} <= set(evaluation["methods"])
    assert len(evaluation["acceptance"]) == 6
    assert p["training"]["train_wall_min"] <= 90, "trained within 90 minutes on the CPU"
    card = (SHIPPED / "README.md").read_text()
    assert "## Training photos" in card and "### Acceptance" in card


def test_the_shipped_refiner_changes_only_the_edit_and_its_3_px_reach():
    refiner = Refiner.from_pretrained()
    rng = np.random.default_rng(0)
    image = (rng.random((80, 96, 3)) * 255).astype(np.uint8)
    mask = np.zeros((80, 96), np.uint8)
    mask[20:50, 30:70] = 255
    image[mask > 0, 0] //= 2  # a colour shift in the edit: something to refine
    out = refiner(image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    import cv2

    distance = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    far = distance > refiner.reach + 1
    assert np.array_equal(out[far], image[far])
    assert not np.array_equal(out[mask > 0], image[mask > 0]), "it does refine the edit"
    assert torch.is_tensor(refiner(torch.rand(3, 40, 40), torch.ones(1, 40, 40)))
