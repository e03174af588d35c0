"""benchmarks/generalisation.py: its conditions are valid configs, its table reads the
evaluation results right, and the untouched-edits check tells a refiner that leaves a good
edit alone from one that does not."""

from __future__ import annotations

import importlib.util
import shlex
import sys

import numpy as np
import pytest
from conftest import ROOT

from pixperfect.cli import main
from pixperfect.config import load_config

sys.path.insert(0, str(ROOT / "benchmarks"))  # its harness, as when run as a script
SPEC = importlib.util.spec_from_file_location(
    "generalisation", ROOT / "benchmarks" / "generalisation.py"
)
generalisation = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(generalisation)


@pytest.mark.parametrize("name", list(generalisation.CONDITIONS))
def test_every_condition_is_a_valid_config_that_differs_from_training(name):
    _, overrides = generalisation.CONDITIONS[name]
    cfg = load_config(generalisation.CONFIG, shlex.split(overrides))  # a wrong key raises
    base = load_config(generalisation.CONFIG, [])
    if name.startswith("kodak/") and name != "kodak/default":
        assert cfg.sim != base.sim, "a Kodak condition other than the anchor changes the recipe"


def test_a_row_takes_the_best_baseline_the_gain_the_worst_bucket_and_the_texture_gap_closed():
    means = {
        "identity": {"band_psnr": 25.0, "band_ciede2000": 4.0, "texture_gap": 2.0},
        "reinhard": {"band_psnr": 26.0},
        "poisson": {"band_psnr": 25.5},
        "laplacian": {"band_psnr": 26.5},
        "refiner": {
            "band_psnr": 27.0, "band_ciede2000": 3.0, "band_psnr_gain": 2.0, "harm_rate": 3.1,
            "texture_gap": 1.3, "texture_gap_closed": 35.0,
        },
    }  # fmt: skip
    results = {
        "methods": means,
        "samples": 96,
        "buckets": {"methods": {"refiner": {"gain_db": [2.5, None, 0.3, -0.4]}}},
    }
    row = generalisation.row("kodak/x", "", results)
    assert row["best_baseline"] == "26.50 (laplacian)"
    assert row["worst_bucket"] == -0.4 and row["ciede_ratio"] == 0.75
    assert (row["texture_gap_closed"], row["texture_gap"], row["identity_texture_gap"]) == (
        35.0, 1.3, 2.0,
    )  # fmt: skip
    table = generalisation.format_rows([row])
    assert "| 27.00 | +2.00 | 3.1 | -0.40 | 0.75 | +35.0 |" in table
    assert table.splitlines()[0].endswith("| texture gap closed % |")
    # results written before the texture gap existed: a dash, not a crash
    for name in ("identity", "refiner"):
        del means[name]["texture_gap"]
    del means["refiner"]["texture_gap_closed"]
    old = generalisation.row("kodak/x", "", results)
    assert old["texture_gap_closed"] is None
    assert generalisation.format_rows([old]).endswith("| 0.75 | - |")


def test_untouched_edits_tell_an_identity_refiner_from_one_that_changes_pixels(
    trained_checkpoint, tmp_path
):
    from PIL import Image
    from skimage import data, transform

    photos = tmp_path / "photos"
    photos.mkdir()
    x = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)
    Image.fromarray((x * 255).astype(np.uint8)).save(photos / "astronaut.png")
    folder = tmp_path / "model"
    assert main(["export", str(trained_checkpoint), str(folder)]) == 0
    changed = generalisation.untouched_edits(folder, photos, draws=2)
    assert changed["samples"] == 2
    # A two-step refiner is not the identity: it changes the photo inside the mask.
    assert changed["identical_pct"] < 100 and changed["mean_change_levels"] > 0
    assert 0 < changed["max_change_levels"] <= changed["max_change_levels_anywhere"]

    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    weights["head.weight"] = torch.zeros_like(weights["head.weight"])  # no correction at all
    weights["head.bias"] = torch.zeros_like(weights["head.bias"])
    weights["gate.conv.weight"] = torch.zeros_like(weights["gate.conv.weight"])
    weights["gate.conv.bias"] = torch.full_like(weights["gate.conv.bias"], -30.0)  # keep it all
    save_file(weights, str(folder / "model.safetensors"))
    kept = generalisation.untouched_edits(folder, photos, draws=2)
    assert kept["identical_pct"] == 100
    assert kept["mean_change_levels"] == kept["max_change_levels"] == 0
    assert kept["max_change_levels_anywhere"] == 0
