import torch
from helpers import square_mask

from pixperfect.metrics import SeamMetrics, boundary_band, seam_scores


def test_band_covers_both_sides_of_the_boundary_only():
    band = boundary_band(square_mask(), 2)[0, 0]
    assert band[8, 16] and band[7, 16] and band[6, 16] and band[9, 16]  # around the top edge
    assert not band[16, 16]  # deep inside
    assert not band[0, 0]  # far outside


def test_band_psnr_sees_an_error_that_whole_image_psnr_dilutes():
    target = torch.full((1, 3, 32, 32), 0.5)
    mask = square_mask()
    pred = target.clone()
    pred[..., boundary_band(mask, 2)[0, 0]] += 0.1
    s = seam_scores(pred, target, mask, band_width=2)
    assert abs(float(s["band_psnr"][0]) - 20.0) < 0.01  # 10 log10(1 / 0.01)
    assert float(s["psnr"][0]) > float(s["band_psnr"][0])


def test_seam_metrics_average_per_image_scores():
    target = torch.full((2, 3, 32, 32), 0.5)
    pred = target.clone()
    pred[1] += 0.1
    metric = SeamMetrics(band_width=2)
    metric.update(pred[:1], target[:1], square_mask())
    metric.update(pred[1:], target[1:], square_mask())
    scores = metric.compute()
    assert abs(float(scores["l1"]) - 0.05) < 1e-6
    assert abs(float(scores["psnr"]) - (100 + 20) / 2) < 1e-3  # perfect image capped at 100


def test_ciede2000_matches_skimage_on_random_colours():
    import kornia
    from skimage.color import deltaE_ciede2000

    from pixperfect.metrics import ciede2000

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 16, 16, generator=g)
    b = (a + 0.1 * torch.randn(1, 3, 16, 16, generator=g)).clamp(0, 1)
    b[..., :4, :] = torch.rand(1, 3, 4, 16, generator=g)  # unrelated colours too
    b[..., 4:6, :] = b[..., 4:6, :].mean(1, keepdim=True)  # and greys (zero chroma)
    lab_a, lab_b = kornia.color.rgb_to_lab(a), kornia.color.rgb_to_lab(b)
    ours = ciede2000(lab_a, lab_b)[0, 0].double().numpy()
    reference = deltaE_ciede2000(
        lab_a[0].permute(1, 2, 0).double().numpy(), lab_b[0].permute(1, 2, 0).double().numpy()
    )
    assert abs(ours - reference).max() < 1e-3
    assert reference.mean() > 1  # the colours do differ


def test_seam_score_orders_a_hard_step_above_a_smooth_ramp_above_a_perfect_image():
    target = torch.full((1, 3, 32, 32), 0.5)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, 16:] = 1  # boundary between columns 15 and 16
    hard = target.clone()
    hard[..., 16:] += 0.1  # a colour step right at the boundary
    ramp = target + 0.1 * torch.linspace(0, 1, 32).clamp(0.3, 0.7).sub(0.3).div(0.4)
    seam = {
        name: float(seam_scores(pred, target, mask, band_width=8)["seam_grad"][0])
        for name, pred in (("hard", hard), ("ramp", ramp), ("perfect", target))
    }
    assert seam["hard"] > seam["ramp"] > seam["perfect"] == 0
    # the same error at the boundary in both, only its sharpness differs
    assert abs(float(ramp[0, 0, 0, -1] - hard[0, 0, 0, -1])) < 1e-6


def test_seam_metrics_report_every_metric_name():
    from pixperfect.metrics import METRIC_NAMES

    metric = SeamMetrics(band_width=2)
    metric.update(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), square_mask())
    scores = metric.compute()
    assert set(scores) == set(METRIC_NAMES) >= {"band_ciede2000", "seam_grad"}
    assert all(torch.isfinite(v) for v in scores.values())


def _inner_outer(pred, target, mask, band_width=2):
    s = seam_scores(pred, target, mask, band_width=band_width)
    return {k: float(v[0]) for k, v in s.items()}


def test_inner_and_outer_bands_split_the_band_at_the_mask_boundary():
    from pixperfect.metrics import inner_outer_bands

    mask = square_mask()
    inner, outer = inner_outer_bands(mask, 2)
    assert torch.equal(inner | outer, boundary_band(mask, 2))
    assert not (inner & outer).any()
    assert inner[0, 0, 8, 16] and inner[0, 0, 9, 16] and not inner[0, 0, 10, 16]
    assert outer[0, 0, 7, 16] and outer[0, 0, 6, 16] and not outer[0, 0, 5, 16]


def test_an_error_only_inside_the_mask_shows_in_the_inner_band_only():
    target = torch.full((1, 3, 32, 32), 0.5)
    mask = square_mask()
    pred = torch.where(mask > 0.5, target + 0.1, target)
    s = _inner_outer(pred, target, mask)
    assert abs(s["inner_band_psnr"] - 20.0) < 0.01  # 10 log10(1 / 0.01)
    assert s["outer_band_psnr"] == 100.0  # no difference: the PSNR cap
    assert s["inner_band_psnr"] < s["band_psnr"] < s["outer_band_psnr"]
    assert s["inner_band_ciede2000"] > 1 and s["outer_band_ciede2000"] == 0
    # the band mixes both halves (16² - 12² px inside, 20² - 16² outside): by pixel share
    assert abs(s["band_ciede2000"] - s["inner_band_ciede2000"] * 112 / (112 + 144)) < 1e-3


def test_an_error_only_outside_the_mask_shows_in_the_outer_band_only():
    target = torch.full((1, 3, 32, 32), 0.5)
    mask = square_mask()
    pred = torch.where(mask > 0.5, target, target - 0.1)
    s = _inner_outer(pred, target, mask)
    assert abs(s["outer_band_psnr"] - 20.0) < 0.01
    assert s["inner_band_psnr"] == 100.0
    assert s["outer_band_ciede2000"] > 1 and s["inner_band_ciede2000"] == 0


def test_inner_and_outer_scores_are_perfect_for_a_side_without_pixels():
    target, pred = torch.full((1, 3, 32, 32), 0.5), torch.full((1, 3, 32, 32), 0.6)
    empty = _inner_outer(pred, target, torch.zeros(1, 1, 32, 32))
    full = _inner_outer(pred, target, torch.ones(1, 1, 32, 32))
    for s in (empty, full):  # no boundary: an empty band on both sides
        assert s["inner_band_psnr"] == s["outer_band_psnr"] == 100.0
        assert s["inner_band_ciede2000"] == s["outer_band_ciede2000"] == 0
