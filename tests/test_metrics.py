import torch

from pixperfect.metrics import SeamMetrics, boundary_band, seam_scores


def _square_mask(size: int = 32, lo: int = 8, hi: int = 24) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., lo:hi, lo:hi] = 1
    return mask


def test_band_covers_both_sides_of_the_boundary_only():
    band = boundary_band(_square_mask(), 2)[0, 0]
    assert band[8, 16] and band[7, 16] and band[6, 16] and band[9, 16]  # around the top edge
    assert not band[16, 16]  # deep inside
    assert not band[0, 0]  # far outside


def test_band_psnr_sees_an_error_that_whole_image_psnr_dilutes():
    target = torch.full((1, 3, 32, 32), 0.5)
    mask = _square_mask()
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
    metric.update(pred[:1], target[:1], _square_mask())
    metric.update(pred[1:], target[1:], _square_mask())
    scores = metric.compute()
    assert abs(float(scores["l1"]) - 0.05) < 1e-6
    assert abs(float(scores["psnr"]) - (100 + 20) / 2) < 1e-3  # perfect image capped at 100
