"""Validation on held-out photos fit for the run: a photo smaller than ``data.val_crop_size``
is left out (named in a warning) instead of upscaled into its crops; none left is refused;
preflight checks ``data.val_images`` (configs/paper.yaml validates on a folder of photos)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from pixperfect.config import load_config
from pixperfect.preflight import Report, _check_validation_photos
from pixperfect.training.datamodule import photos_for_val_crop, validation_samples


def test_held_out_photos_smaller_than_the_val_crop_are_left_out_not_upscaled(caplog):
    held = {"big": torch.rand(3, 80, 96), "small": torch.rand(3, 40, 96)}
    with caplog.at_level(logging.WARNING):
        fit = photos_for_val_crop(held, 64)
    assert list(fit) == ["big"]
    assert "small (96x40)" in caplog.text and "data.val_crop_size=64" in caplog.text
    with pytest.raises(ValueError, match="no held-out photo is at least data.val_crop_size=128"):
        photos_for_val_crop(held, 128)


def test_validation_samples_come_from_the_photos_large_enough(tiny_config):
    cfg = tiny_config("data.val_crop_size=64", "data.val_samples_per_image=2")
    held = {"big": torch.rand(3, 80, 96), "small": torch.rand(3, 40, 96)}
    samples = validation_samples(cfg, held)
    assert [s["name"] for s in samples] == ["big#0", "big#1"]
    assert all(s["target"].shape == (3, 64, 64) and s["families"] for s in samples)


def test_the_paper_config_validates_on_a_folder_of_photos_that_preflight_checks(tmp_path):
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert cfg.data.val_images == "photos/val" and cfg.data.val_crop_size == 512
    folder = tmp_path / "val"
    folder.mkdir()
    cfg.data.val_images = str(folder)
    for name, size in (("a", (600, 520)), ("b", (640, 480))):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(folder / f"{name}.png")
    report = Report("validation")
    _check_validation_photos(cfg, report)
    assert report.passed and "1 of 2 validation photos left out" in report.format(), report.format()
    (folder / "a.png").unlink()
    report = Report("validation")
    _check_validation_photos(cfg, report)
    assert not report.passed and "is 512 px or larger" in report.format()
    cfg.data.val_images = str(tmp_path / "missing")
    report = Report("validation")
    _check_validation_photos(cfg, report)
    assert [w for w, _ in report.problems if "validation photos missing" in w]
