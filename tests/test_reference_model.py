"""The shipped reference refiner and what a release records: the default model of
``refine`` and ``Refiner.from_pretrained()``, the provenance of an export (recipe hash,
training photos and licences, evaluation with the acceptance check), evaluation of an
export folder beside the shipped model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from pixperfect.cli import main
from pixperfect.data.sources import describe_sources
from pixperfect.evaluation.acceptance import accepted, check_acceptance
from pixperfect.evaluation.evaluate import evaluate
from pixperfect.inference import Refiner
from pixperfect.inference.pretrained import MODEL_ENV
from pixperfect.release import evaluation_summary, recipe_fingerprint


def _results(refiner: dict, bucket_gains: list, baseline_psnr: float = 27.0) -> dict:
    """An evaluation result with identity at 25 dB band PSNR, CIEDE2000 4.0, seam_grad 0.02."""
    identity = {"band_psnr": 25.0, "band_ciede2000": 4.0, "seam_grad": 0.02}
    return {
        "methods": {
            "identity": identity,
            "reinhard": {"band_psnr": baseline_psnr, "band_ciede2000": 3.5, "seam_grad": 0.02},
            "refiner": refiner,
        },
        "buckets": {
            "labels": [f"b{i}" for i in range(len(bucket_gains))],
            "samples": [0 if g is None else 48 for g in bucket_gains],
            "methods": {"refiner": {"gain_db": bucket_gains}},
        },
        "samples": 192,
        "photos": 24,
    }


def test_acceptance_passes_only_when_every_criterion_holds():
    good = {"band_psnr": 28.1, "band_ciede2000": 2.9, "seam_grad": 0.019, "harm_rate": 4.0}
    rows = check_acceptance(_results(good, [3.0, 2.0, 0.5, -0.05]))
    assert [r["passed"] for r in rows] == [True] * 6 and accepted(rows)
    failures = {  # criterion: (scores, best baseline's band PSNR)
        "band PSNR >= identity": ({**good, "band_psnr": 27.4}, 26.0),  # +2.4 dB only
        "best baseline (reinhard)": (good, 27.2),  # baseline + 0.9
        "CIEDE2000": ({**good, "band_ciede2000": 3.1}, 26.0),  # 0.775 x identity
        "harm rate": ({**good, "harm_rate": 5.2}, 26.0),
        "seam_grad": ({**good, "seam_grad": 0.021}, 26.0),
    }
    for criterion, (scores, baseline) in failures.items():
        rows = check_acceptance(_results(scores, [3.0, 2.0, 0.5, -0.05], baseline))
        failed = [r["criterion"] for r in rows if r["passed"] is False]
        assert len(failed) == 1 and criterion in failed[0], (criterion, failed)
        assert not accepted(rows)
    rows = check_acceptance(_results(good, [3.0, None, 0.5, -0.2]))
    assert [r["criterion"] for r in rows if not r["passed"]] == ["worst bucket gain >= -0.1 dB"]


def test_training_photos_are_grouped_by_collection_with_their_licence():
    sources = [
        "/data/train/cbsd68/1.png",
        "/data/train/urban100/a.png",
        "/data/train/cbsd68/2.png",
        "skimage:astronaut",
        "/elsewhere/mine/x.png",
    ]
    described = {d["collection"]: d for d in describe_sources(sources)}
    assert list(described) == ["cbsd68", "urban100", "skimage", "mine"]
    assert described["cbsd68"]["photos"] == 2 and "Berkeley" in described["cbsd68"]["source"]
    assert "Flickr" in described["urban100"]["licence"]
    assert described["mine"]["licence"].startswith("unknown")


def test_the_recipe_hash_follows_the_recipe_not_the_run_name(tiny_config):
    from omegaconf import OmegaConf

    def fingerprint(*overrides: str) -> dict:
        return recipe_fingerprint(OmegaConf.to_container(tiny_config(*overrides), resolve=True))

    base = fingerprint("run.name=a")
    assert re.fullmatch(r"[0-9a-f]{64}", base["hash"])
    assert fingerprint("run.name=b") == base, "names and places are not the recipe"
    assert fingerprint("loss.l1=2")["hash"] != base["hash"]
    assert fingerprint("sim.colour.p=0.1")["hash"] != base["hash"]


def test_an_export_records_its_evaluation_and_acceptance_in_provenance_and_card(
    trained_checkpoint, tmp_path
):
    from pixperfect.release import export_checkpoint

    good = {
        "band_psnr": 28.1,
        "band_ciede2000": 2.9,
        "seam_grad": 0.019,
        "harm_rate": 4.0,
        "band_psnr_gain": 3.1,
    }
    summary = evaluation_summary(_results(good, [3.0, 2.0]), command="pixperfect evaluate X")
    folder = export_checkpoint(
        trained_checkpoint, tmp_path / "m", name="tiny-v0", evaluation=summary,
        extra={"training": {"train_wall_min": 1.5}},
    )  # fmt: skip
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["name"] == "tiny-v0"
    assert len(provenance["evaluation"]["acceptance"]) == 6
    assert provenance["training"] == {"train_wall_min": 1.5}
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["recipe"]["hash"])
    card = (folder / "README.md").read_text()
    assert "# tiny-v0" in card and "pixperfect evaluate X" in card
    assert "| refiner | 28.100 |" in card and "| harm rate <= 5% | 4.0 | 5.0 | pass |" in card
    assert Refiner.from_pretrained(folder).provenance["name"] == "tiny-v0"


def _image_and_mask(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    pixels = (rng.random((48, 56, 3)) * 255).astype(np.uint8)
    mask = np.zeros((48, 56), np.uint8)
    mask[12:30, 16:40] = 255
    PILImage.fromarray(pixels).save(folder / "in.png")
    PILImage.fromarray(mask).save(folder / "mask.png")
    return folder / "in.png", folder / "mask.png"


def test_pixperfect_model_points_the_default_elsewhere_and_a_bad_one_is_named(
    trained_checkpoint, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "mine"
    assert main(["export", str(trained_checkpoint), str(folder)]) == 0
    monkeypatch.setenv(MODEL_ENV, str(folder))
    assert Refiner.from_pretrained().provenance["name"] == "mine"
    image, mask = _image_and_mask(tmp_path)
    capsys.readouterr()
    args = ["refine", "--image", str(image), "--mask", str(mask), "--out", str(tmp_path / "o.png")]
    assert main(args) == 0
    assert "model: mine (shipped default" in capsys.readouterr().out
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=rf"\${MODEL_ENV}=.*nowhere is not a folder"):
        Refiner.from_pretrained()


def test_evaluate_scores_an_export_folder_beside_the_shipped_model(
    trained_checkpoint, tmp_path, tiny_config, monkeypatch
):
    folder = tmp_path / "mine"
    assert main(["export", str(trained_checkpoint), str(folder)]) == 0
    monkeypatch.setenv(MODEL_ENV, str(folder))  # the "shipped" model of this test
    results = evaluate(tiny_config(), folder, methods=["identity", "refiner"], pretrained=True)
    assert list(results["methods"]) == ["identity", "refiner", "pretrained"]
    same = results["methods"]["refiner"]["band_psnr"], results["methods"]["pretrained"]["band_psnr"]
    assert same[0] == pytest.approx(same[1], abs=1e-4), "one model, two names: same scores"
    assert "pretrained" not in evaluate(tiny_config(), folder)["methods"], "never by default"
