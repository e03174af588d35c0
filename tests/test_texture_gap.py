"""The texture gap (pixperfect.texture_gap): it sees grain lost inside an edit, not the
content, a colour step or the realisation of the grain; samples without rings are left out
of the means; ``evaluate`` reports it for every method."""

from __future__ import annotations

import json
import math

import kornia
import numpy as np
import pytest
import torch
from helpers import square_mask

from pixperfect.texture_gap import (
    high_frequency,
    summarise,
    texture_gap,
    texture_rings,
)

SIZE, WIDTH, GRAIN = 96, 8, 0.03


def _grainy_photo(seed: int = 0) -> torch.Tensor:
    """(1, 3, SIZE, SIZE): smooth colour gradients plus luminance grain of std GRAIN."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    base = torch.stack([0.3 + 0.3 * x, 0.4 + 0.2 * y, 0.5 - 0.2 * x * y])[None]
    return (base + GRAIN * torch.randn(1, 1, SIZE, SIZE, generator=g)).clamp(0, 1)


def _inside(mask: torch.Tensor, edit: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    return torch.where(mask > 0.5, edit, photo)


def _blur(image: torch.Tensor) -> torch.Tensor:
    return kornia.filters.gaussian_blur2d(image, (13, 13), (2.0, 2.0), border_type="reflect")


def _gap(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    return float(texture_gap(pred, target, mask, WIDTH)[0])


def test_the_gap_is_zero_when_the_output_is_the_photo_even_if_its_grain_differs_inside():
    target, mask = _grainy_photo(), square_mask(1, SIZE, 24, 72)
    assert _gap(target.clone(), target, mask) == 0.0
    # a photo whose own grain is coarser inside the mask than around it (a textured object)
    textured = _inside(mask, _blur(target) + 3 * (target - _blur(target)), target)
    assert _gap(textured.clone(), textured, mask) == 0.0
    assert _gap(target, textured, mask) > 5  # the even grain of the first photo is a gap here


def test_a_blurred_inside_opens_a_gap_that_the_photos_own_grain_closes():
    target, mask = _grainy_photo(), square_mask(1, SIZE, 24, 72)
    blurred = _inside(mask, _blur(target), target)  # the edit lost its grain
    assert _gap(blurred, target, mask) > 10  # dB: the inner ring's energy fell tenfold or more
    residual = target - _blur(target)  # the target's high frequencies, added back inside
    restored = _inside(mask, _blur(target) + residual, target)
    assert _gap(restored, target, mask) < 0.01 * _gap(blurred, target, mask)


def test_independent_noise_of_the_photos_grain_energy_closes_the_gap_too():
    target, mask = _grainy_photo(), square_mask(1, SIZE, 24, 72)
    g = torch.Generator().manual_seed(1)
    blurred = _inside(mask, _blur(target), target)
    other_grain = GRAIN * torch.randn(1, 1, SIZE, SIZE, generator=g)  # another realisation
    regrained = _inside(mask, _blur(target) + other_grain, target)
    assert _gap(regrained, target, mask) < 0.1 * _gap(blurred, target, mask)
    # pixel by pixel the new grain is no closer to the photo than the blur was
    inside = (mask > 0.5).expand_as(target)
    l1 = {
        name: float((image - target).abs()[inside].mean())
        for name, image in (("blurred", blurred), ("regrained", regrained))
    }
    assert l1["regrained"] > l1["blurred"]
    # too much grain opens the gap again, on the other side
    coarse = _inside(mask, _blur(target) + 3 * other_grain, target)
    assert _gap(coarse, target, mask) > 5


def test_a_colour_step_at_the_boundary_is_not_a_texture_gap():
    target, mask = _grainy_photo(), square_mask(1, SIZE, 24, 72)
    shifted = _inside(mask, target * 0.9 + 0.2, target)  # a seam of colour, same grain
    assert _gap(shifted, target, mask) < 1.0  # dB; the grain is scaled by 0.9 (0.9 dB)
    # no ring pixel's high-pass reaches across the boundary: a bare step leaves them nothing
    step = _inside(mask, torch.full_like(target, 0.8), torch.full_like(target, 0.2))
    inner, outer = texture_rings(mask, WIDTH)
    assert float(high_frequency(step)[inner | outer].abs().max()) < 1e-6
    assert float(high_frequency(step).abs().max()) > 0.1  # it does at the boundary itself


def test_smooth_shading_has_no_high_frequency():
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    ramp = torch.stack([0.2 + 0.5 * x, 0.3 + 0.4 * y, 0.5 + 0.0 * x])[None]
    assert float(high_frequency(ramp)[..., 4:-4, 4:-4].abs().max()) < 1e-5


def test_empty_and_full_masks_have_no_gap_and_are_left_out_of_the_means():
    target = _grainy_photo()
    composite = _inside(square_mask(1, SIZE, 24, 72), _blur(target), target)
    for mask in (torch.zeros(1, 1, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)):
        assert math.isnan(_gap(composite, target, mask))
    summary = summarise([1.0, None, float("nan")], [4.0, None, float("nan")])
    assert summary == {"texture_gap": 1.0, "texture_gap_closed": 75.0}
    assert summarise([None], [None]) == {"texture_gap": None, "texture_gap_closed": None}
    # identity exact everywhere: nothing to close, no share rather than a division by zero
    assert summarise([0.5, 0.0], [0.0, 0.0])["texture_gap_closed"] is None


def test_the_share_closed_is_a_ratio_of_means_and_negative_for_a_wider_gap():
    assert summarise([1.0, 1.0], [3.0, 1.0])["texture_gap_closed"] == pytest.approx(50.0)
    assert summarise([2.0], [1.0])["texture_gap_closed"] == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="2 method gaps for 1 samples"):
        summarise([1.0, 1.0], [1.0])


def test_evaluate_reports_the_texture_gap_of_every_method_in_json_markdown_and_csv(
    tiny_config, tmp_path
):
    from pixperfect.evaluation.evaluate import evaluate
    from pixperfect.evaluation.report import write_results

    methods = ["identity", "reinhard", "laplacian"]
    cfg = tiny_config("sim.texture.p=1", "eval.max_size=128")  # 64 px: strokes too thin
    results = evaluate(cfg, None, methods=methods, perceptual=False)
    assert results["texture_gap_samples"] == results["samples"] == 2
    assert {"texture_gap", "texture_gap_closed"} <= set(results["metrics"])
    for name in methods:
        assert np.isfinite(results["methods"][name]["texture_gap"])
        assert np.isfinite(results["methods"][name]["texture_gap_closed"])
    assert results["methods"]["identity"]["texture_gap_closed"] == 0.0
    for sample in results["per_sample"]:
        assert sample["identity_texture_gap"] == sample["scores"]["identity"]["texture_gap"]
    gaps = [s["scores"]["laplacian"]["texture_gap"] for s in results["per_sample"]]
    assert results["methods"]["laplacian"]["texture_gap"] == pytest.approx(np.mean(gaps))
    out = write_results(results, tmp_path / "eval.json")
    assert json.loads(out.read_text())["methods"]["reinhard"]["texture_gap"] is not None
    markdown = (tmp_path / "eval.md").read_text()
    assert "texture_gap ↓" in markdown and "texture_gap_closed ↑" in markdown
    assert "on the 2 of 2 samples whose mask leaves both rings" in markdown
    header = (tmp_path / "eval.csv").read_text().splitlines()[0].split(",")
    assert {"texture_gap", "texture_gap_closed"} <= set(header)


def test_a_sample_with_an_empty_mask_is_left_out_of_evaluates_means_not_a_nan():
    from pixperfect.evaluation.evaluate import _identity, aggregate, score_sample

    target = _grainy_photo()[0]
    records = []
    for name, mask in (
        ("edit", square_mask(1, SIZE, 24, 72)[0]),
        ("empty", torch.zeros(1, SIZE, SIZE)),
    ):
        composite = _inside(mask[None], _blur(target[None]), target[None])[0]
        sample = {"name": f"{name}#0", "target": target, "composite": composite, "mask": mask}
        outputs = {"identity": composite[None], "photo": target[None]}
        records.append(score_sample(sample, outputs, WIDTH))
    assert records[1]["identity_texture_gap"] is None
    assert records[1]["scores"]["photo"]["texture_gap"] is None
    json.dumps(records[1]["scores"], allow_nan=False)  # valid JSON: no NaN
    methods = {"identity": _identity, "photo": _identity}
    scored = aggregate(records, methods, None, by_family=False)
    assert scored["texture_gap_samples"] == 1
    identity, photo = scored["methods"]["identity"], scored["methods"]["photo"]
    assert identity["texture_gap"] == pytest.approx(records[0]["identity_texture_gap"])
    assert identity["texture_gap"] > 10 and identity["texture_gap_closed"] == 0.0
    assert photo["texture_gap"] == 0.0 and photo["texture_gap_closed"] == 100.0
