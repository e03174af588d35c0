import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_pixels

from pixperfect.cli import main
from pixperfect.evaluation.baselines import BASELINES, poisson_blend
from pixperfect.evaluation.evaluate import _pooled
from pixperfect.evaluation.perceptual import PerceptualScores, frechet_distance, ids_scores
from pixperfect.metrics import boundary_band, seam_scores

SIZE = 48
SHIFT = torch.tensor([0.10, -0.06, 0.05]).view(1, 3, 1, 1)


def _smooth_photo(seed: int = 0) -> torch.Tensor:
    """(1, 3, SIZE, SIZE): smooth colour gradients plus a little fine texture."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    base = torch.stack([0.3 + 0.3 * x, 0.4 + 0.2 * y, 0.5 - 0.2 * x * y])[None]
    return base + 0.02 * torch.rand(1, 3, SIZE, SIZE, generator=g)


def _disk(cy: int, cx: int, radius: int = 10) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return (((y - cy) ** 2 + (x - cx) ** 2) < radius**2).float()[None, None]


def _shifted(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A colour-shift seam: the edit is the photo with a uniform colour offset."""
    return torch.where(mask > 0.5, target + SHIFT, target)


def _band_colour_error(image, target, mask) -> float:
    return float(seam_scores(image, target, mask, band_width=3)["band_ciede2000"][0])


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_reduces_the_band_colour_error_of_a_colour_shift_seam(name):
    target, mask = _smooth_photo(), _disk(24, 24)
    composite = _shifted(target, mask)
    out = BASELINES[name](composite, mask)
    assert out.shape == composite.shape
    assert _band_colour_error(out, target, mask) < 0.7 * _band_colour_error(composite, target, mask)
    far = ~boundary_band(mask, 14) & (mask < 0.5)  # more than 14 px outside the mask
    assert far.sum() > 100
    assert torch.equal(out[far.expand_as(out)], composite[far.expand_as(out)])


def test_poisson_handles_a_mask_touching_the_image_border():
    target, mask = _smooth_photo(1), _disk(24, 2)  # cut off by the left border
    composite = _shifted(target, mask)
    out = poisson_blend(composite, mask)
    assert torch.isfinite(out).all()
    assert _band_colour_error(out, target, mask) < 0.7 * _band_colour_error(composite, target, mask)


def test_baselines_return_the_composite_for_an_empty_or_full_mask():
    composite = _smooth_photo(2)
    for mask in (torch.zeros(1, 1, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)):
        for baseline in BASELINES.values():
            assert torch.equal(baseline(composite, mask), composite)


def test_pooling_is_set_on_a_copy_that_shares_the_network(trained_checkpoint):
    from pixperfect.inference import Refiner

    refiner = Refiner.from_checkpoint(trained_checkpoint)
    pooled = _pooled(refiner, 4, seed=3)
    assert (pooled.pooling, pooled.seed) == (4, 3)
    assert (refiner.pooling, refiner.seed) == (1, 0)  # the original is left as it was
    assert pooled.model is refiner.model


def test_frechet_distance_and_ids_separate_identical_from_distinct_features():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 6, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(real, real)) < 1e-6
    assert frechet_distance(real, real + 3) == pytest.approx(6 * 9, rel=1e-6)
    u_ids, p_ids = ids_scores(real, real + 3)  # trivially separable: nothing fools the SVM
    assert u_ids == 0 and p_ids == 0
    u_ids, _ = ids_scores(real, real + 0.01 * torch.randn(40, 6, generator=g))
    assert u_ids > 25  # near-identical sets: the SVM errs often


def test_perceptual_scores_use_whatever_feature_network_is_loaded():
    from pixperfect.evaluation.perceptual import Perceptual

    def mean_colour(images: torch.Tensor) -> torch.Tensor:  # a stand-in, never shipped
        return images.mean((2, 3)).double()

    scores = PerceptualScores(Perceptual(features=mean_colour))
    for seed in range(6):
        target = _smooth_photo(seed)
        scores.update({"same": target.clone(), "shifted": target + 0.2}, target)
    result = scores.compute()
    assert result["same"]["fid"] == pytest.approx(0, abs=1e-9)
    assert result["shifted"]["fid"] > result["same"]["fid"]
    assert "lpips" not in result["same"]


def _write_tensor(path, tensor: torch.Tensor) -> None:
    """Write a (1, C, H, W) tensor in [0, 1] as an 8-bit image (one channel: grey)."""
    pixels = tensor[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    write_pixels(path, pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def _triples_folder(root, stems=("a", "b")):
    for i, stem in enumerate(stems):
        target, mask = _smooth_photo(i), _disk(20 + 4 * i, 26)
        _write_tensor(root / "edited" / f"{stem}.png", _shifted(target, mask))
        _write_tensor(root / "mask" / f"{stem}.png", mask)
        _write_tensor(root / "target" / f"{stem}.png", target)
    return root


def test_evaluate_on_a_triples_folder_writes_tables_json_and_a_cases_sheet(
    trained_checkpoint, tmp_path, capsys
):
    data = _triples_folder(tmp_path / "triples")
    out = tmp_path / "eval" / "results.json"
    code = main(
        [
            "evaluate",
            "--dataset",
            str(data),
            "--ckpt",
            str(trained_checkpoint),
            "--out",
            str(out),
            "--no-perceptual",
            "--save-examples",
            "1",
        ]
    )
    assert code == 0
    rows = ["identity", "reinhard", "seam_affine", "poisson", "laplacian", "refiner", "refiner_raw"]
    results = json.loads(out.read_text())
    assert list(results["methods"]) == rows
    assert results["samples"] == 2 and results["dataset"]["kind"] == "triples"
    assert {"band_ciede2000", "seam_grad"} <= set(results["methods"]["refiner"])
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert all(f"| {name} |" in markdown for name in rows)
    assert "[band]" in markdown and "↓" in markdown and "↑" in markdown
    csv_lines = (tmp_path / "eval" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,psnr,")
    assert [line.split(",")[0] for line in csv_lines[1 : 1 + len(rows)]] == rows
    assert (tmp_path / "eval" / "cases.png").stat().st_size > 0
    assert results["cases"]["ranked_by"].startswith("refiner ")
    assert (tmp_path / "eval" / "examples" / "a_0_composite.png").is_file()
    assert "refiner_raw" in capsys.readouterr().out  # the console table


def test_a_triples_folder_missing_a_mask_is_an_error_naming_the_file(tmp_path, capsys):
    data = _triples_folder(tmp_path / "triples")
    (data / "mask" / "b.png").unlink()
    code = main(["evaluate", "--dataset", str(data), "--methods", "identity", "--no-perceptual"])
    assert code == 2
    assert str(data / "mask" / "b.png") in capsys.readouterr().err


def test_perceptual_columns_are_left_out_with_a_message_when_weights_are_missing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    data = _triples_folder(tmp_path / "triples", stems=("a",))
    out = tmp_path / "results.json"
    code = main(
        ["evaluate", "--dataset", str(data), "--methods", "identity,poisson", "--out", str(out)]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and "weights-inception-2015-12-05" in err
    assert err.count("LPIPS cannot be built offline") == 1  # said once, not per image
    results = json.loads(out.read_text())
    for column in ("lpips", "fid", "u_ids", "p_ids"):
        assert column not in results["metrics"]
        assert column not in results["methods"]["poisson"]
    assert "lpips" not in (tmp_path / "results.csv").read_text().splitlines()[0]
    assert np.isfinite(results["methods"]["poisson"]["band_psnr"])


def test_pooling_adds_a_refiner_pooled_row(trained_checkpoint, tmp_path):
    data = _triples_folder(tmp_path / "triples", stems=("a",))
    out = tmp_path / "results.json"
    args = ["evaluate", "--dataset", str(data), "--ckpt", str(trained_checkpoint)]
    args += ["--methods", "identity,refiner,refiner_pooled", "--pooling", "2"]
    assert main([*args, "--no-perceptual", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results["methods"]) == ["identity", "refiner", "refiner_pooled"]
    assert results["pooling"] == 2


def test_a_method_that_makes_one_of_four_samples_1_db_worse_has_a_harm_rate_of_25_percent():
    from pixperfect.evaluation.breakdown import compare_to_identity, harm_rate

    identity = [22.0, 27.0, 32.0, 38.0]
    worse_once = [21.0, 27.5, 33.0, 38.0]  # -1 dB on the first sample, gains elsewhere
    slightly_worse = [p - 0.4 for p in identity]  # within the 0.5 dB margin everywhere
    assert harm_rate(worse_once, identity) == 25.0
    assert harm_rate(slightly_worse, identity) == 0.0
    result = compare_to_identity(
        {"identity": identity, "a": worse_once, "b": slightly_worse}, identity
    )
    assert list(result["methods"]) == ["a", "b"]  # identity is not compared with itself
    assert result["methods"]["a"]["harm_rate"] == 25.0
    assert result["methods"]["a"]["band_psnr_gain"] == pytest.approx((-1 + 0.5 + 1 + 0) / 4)
    assert result["methods"]["b"]["band_psnr_gain"] == pytest.approx(-0.4)


def test_samples_are_bucketed_by_identity_band_psnr_with_a_perfect_band_in_the_top_bucket():
    from pixperfect.evaluation.breakdown import (
        BUCKET_EDGES_DB,
        PSNR_CAP_DB,
        bucket_index,
        compare_to_identity,
    )

    assert BUCKET_EDGES_DB == (25.0, 30.0, 35.0)
    identity = [24.9, 25.0, 29.99, 30.0, 36.0, float("inf")]
    assert [bucket_index(p) for p in identity] == [0, 1, 1, 2, 3, 3]
    method = [26.9, 24.0, 29.99, 31.0, 35.0, 60.0]
    buckets = compare_to_identity({"m": method}, identity)["buckets"]
    assert buckets["labels"] == ["< 25", "25-30", "30-35", ">= 35"]
    assert buckets["samples"] == [1, 2, 1, 2]
    gain = buckets["methods"]["m"]["gain_db"]
    assert gain[:3] == pytest.approx([2.0, -0.5, 1.0])
    assert gain[3] == pytest.approx((-1.0 + 60.0 - PSNR_CAP_DB) / 2)  # infinity clamped
    assert buckets["methods"]["m"]["harm_rate"] == [0.0, 50.0, 0.0, 100.0]


def test_an_empty_bucket_has_no_gain_rather_than_a_nan():
    from pixperfect.evaluation.breakdown import compare_to_identity, format_buckets

    buckets = compare_to_identity({"m": [20.0, 40.0]}, [20.0, float("inf")])["buckets"]
    assert buckets["samples"] == [1, 0, 0, 1]
    assert buckets["methods"]["m"]["gain_db"][1:3] == [None, None]
    assert "nan" not in format_buckets(buckets).lower()
    assert "| m | +0.00 | - | - | -60.00 |" in format_buckets(buckets, markdown=True)


def test_evaluate_reports_harm_rate_band_sides_and_buckets_in_json_markdown_and_csv(
    trained_checkpoint, tmp_path, capsys
):
    data = _triples_folder(tmp_path / "triples", stems=("a", "b", "c"))
    out = tmp_path / "eval" / "results.json"
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    args = ["evaluate", "--config", str(demo), "eval.band_width=4"]
    args += ["--dataset", str(data), "--ckpt", str(trained_checkpoint)]
    args += ["--methods", "identity,laplacian,refiner", "--no-perceptual", "--out", str(out)]
    assert main(args) == 0
    results = json.loads(out.read_text())
    assert results["band_width"] == 4
    identity, refiner = results["methods"]["identity"], results["methods"]["refiner"]
    for metric in ("inner_band_psnr", "outer_band_psnr", "inner_band_ciede2000"):
        assert metric in results["metrics"] and np.isfinite(refiner[metric])
    # the edit is a colour shift inside the mask: the composite is wrong inside only
    assert identity["outer_band_psnr"] == 100.0 and identity["inner_band_psnr"] < 40
    assert "harm_rate" not in identity and "band_psnr_gain" not in identity
    per_sample = results["per_sample"]
    harmed = [
        s["scores"]["refiner"]["band_psnr"] < s["identity_band_psnr"] - 0.5 for s in per_sample
    ]
    assert refiner["harm_rate"] == pytest.approx(100 * sum(harmed) / 3)
    gains = [s["scores"]["refiner"]["band_psnr"] - s["identity_band_psnr"] for s in per_sample]
    assert refiner["band_psnr_gain"] == pytest.approx(sum(gains) / 3)
    buckets = results["buckets"]
    assert sum(buckets["samples"]) == 3 and list(buckets["methods"]) == ["laplacian", "refiner"]
    assert len(buckets["methods"]["refiner"]["gain_db"]) == len(buckets["labels"]) == 4
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "harm_rate ↓" in markdown and "band_psnr_gain ↑" in markdown
    assert "| identity band PSNR | < 25 dB | 25-30 | 30-35 | >= 35 |" in markdown
    assert "| samples |" in markdown and "| refiner | " in markdown.split("seam difficulty")[1]
    header = (tmp_path / "eval" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"inner_band_psnr", "outer_band_ciede2000", "band_psnr_gain", "harm_rate"} <= set(header)
    console = capsys.readouterr().out
    assert "harm_rate" in console and "identity band PSNR" in console and ">= 35" in console


def test_evaluate_compares_with_identity_by_default_on_simulated_samples(tiny_config):
    from pixperfect.evaluation.evaluate import evaluate
    from pixperfect.evaluation.report import format_markdown, format_table

    results = evaluate(tiny_config(), None, methods=["identity", "reinhard"], perceptual=False)
    assert results["methods"]["reinhard"]["harm_rate"] in (0.0, 50.0, 100.0)  # 2 samples
    assert sum(results["buckets"]["samples"]) == results["samples"] == 2
    assert all(np.isfinite(s["identity_band_psnr"]) for s in results["per_sample"])
    assert "identity band PSNR" in format_table(results)
    assert "seam difficulty" in format_markdown(results)


def test_simulated_evaluation_splits_the_gain_by_artifact_family(tiny_config):
    from data_sim.simulator import FAMILIES
    from pixperfect.evaluation.evaluate import evaluate
    from pixperfect.evaluation.report import format_markdown, format_table

    cfg = tiny_config("eval.samples_per_image=4")
    results = evaluate(cfg, None, methods=["identity", "reinhard"], perceptual=False)
    families = results["families"]
    per_sample = results["per_sample"]
    assert all(s["families"] and set(s["families"]) <= set(FAMILIES) for s in per_sample)
    for name, count, gain in zip(
        families["names"], families["samples"], families["methods"]["reinhard"]["gain_db"],
        strict=True,
    ):  # fmt: skip
        members = [s for s in per_sample if name in s["families"]]
        assert count == len(members) > 0
        expected = np.mean(
            [s["scores"]["reinhard"]["band_psnr"] - s["identity_band_psnr"] for s in members]
        )
        assert gain == pytest.approx(expected, abs=1e-9)
    assert "artifact family" in format_table(results)
    assert "by artifact family" in format_markdown(results)


def test_a_clean_sample_has_no_family_and_a_codec_one_has_texture_too():
    import torch

    from data_sim.simulator import family_names

    params = {
        "colour": {"applied": torch.tensor([True, False])},
        "texture": {"applied": torch.tensor([True, True]), "vae": torch.tensor([True, False])},
        "content": {"applied": torch.tensor([False, True])},
        "misalign": {"applied": torch.tensor([False, False])},
    }
    assert family_names(params, 0) == ["colour", "texture", "codec"]
    assert family_names(params, 1) == ["texture", "content"]
    from data_sim.mix import CLEAN

    params["mix"] = {"kind": torch.tensor([CLEAN, 0])}
    assert family_names(params, 0) == []
