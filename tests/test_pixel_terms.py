"""The pixel terms that weigh errors the way the evaluation scores them: L1 over a Gaussian
pyramid (smooth colour errors keep their weight below full size) and minus the PSNR per
sample (every sample's dB counts alike)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pixperfect.training.objective import PIXEL_TERMS, Compared


def _term(
    name: str, pred: torch.Tensor, target: torch.Tensor, floor_db: float = 80
) -> torch.Tensor:
    objective = SimpleNamespace(cfg=SimpleNamespace(psnr_floor_db=floor_db))
    return PIXEL_TERMS[name](objective, Compared(pred, target))


def _pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A target, the target with a smooth colour shift and with grain of the same L1."""
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 64, 64, generator=gen) * 0.5 + 0.25
    shift = target + 0.02
    grain = target + 0.02 * torch.randn(2, 3, 64, 64, generator=gen).sign()
    return target, shift, grain


def test_plain_l1_cannot_tell_a_colour_shift_from_grain_of_the_same_size():
    target, shift, grain = _pair()
    assert torch.isclose(_term("l1", shift, target), _term("l1", grain, target), rtol=1e-3)


def test_the_pyramid_l1_weighs_a_smooth_colour_shift_above_grain_of_the_same_l1():
    target, shift, grain = _pair()
    assert torch.isclose(_term("pyramid_l1", shift, target), torch.tensor(0.02), rtol=1e-3)
    assert _term("pyramid_l1", shift, target) > 2 * _term("pyramid_l1", grain, target)


def test_the_psnr_term_is_minus_the_mean_psnr_and_counts_every_samples_db_alike():
    target = torch.full((2, 3, 16, 16), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # 20 dB
    pred[1] += 0.001  # 60 dB
    # (the 1e-8 floor on the MSE moves the 60 dB sample by 0.04 dB)
    assert torch.isclose(_term("psnr", pred, target), torch.tensor(-40.0), atol=0.05)
    pred.requires_grad_(True)
    _term("psnr", pred, target).backward()
    # Halving either sample's error gains the same 6 dB: the nearly right sample's pixels get
    # a 100x larger gradient than under MSE, where it would weigh 10^4 times less.
    g = pred.grad.abs().flatten(1).mean(1)
    assert torch.isclose(g[1] / g[0], torch.tensor(100.0), rtol=2e-2)


def test_the_psnr_term_stays_finite_on_an_exact_sample():
    target = torch.rand(1, 3, 8, 8)
    pred = target.clone().requires_grad_(True)
    loss = _term("psnr", pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_the_psnr_floor_keeps_an_untouched_edit_from_outweighing_a_bad_one():
    """Below the floor's error a sample counts as right: with an 80 dB floor an untouched edit
    moved by 0.1 level pulls 240 times harder on the network than a 20 dB edit, with the
    default 50 dB floor 4 times (60 times less)."""
    target = torch.full((2, 3, 16, 16), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # a bad edit, 20 dB
    pred[1] += 0.1 / 255  # an untouched edit moved by 0.1 level, 68 dB
    pulls = {}
    for floor in (80.0, 50.0):
        p = pred.clone().requires_grad_(True)
        _term("psnr", p, target, floor).backward()
        g = p.grad.abs().flatten(1).sum(1)
        pulls[floor] = float(g[1] / g[0])
    assert pulls[80.0] > 100 and pulls[50.0] < 10 and pulls[80.0] > 50 * pulls[50.0], pulls


def test_the_floor_is_a_setting_not_a_weight(tiny_config):
    from pixperfect.config import ConfigError

    with pytest.raises(ConfigError, match="at least one of"):
        tiny_config("loss.mse=0", "loss.l1=0", "loss.psnr=0", "loss.psnr_floor_db=50")


def test_the_loss_config_names_each_pixel_term_once_with_its_tone_twin():
    from pixperfect.config import load_config
    from pixperfect.config_schema import TONE_PREFIX, loss_weights

    weights = loss_weights(load_config().loss)
    rgb = [n for n in weights if not n.startswith(TONE_PREFIX)]
    assert [n for n in rgb if n != "adversarial"] == list(PIXEL_TERMS)
    assert [n for n in weights if n.startswith(TONE_PREFIX)] == [TONE_PREFIX + n for n in rgb]


def test_a_weight_without_a_term_function_is_refused_by_name(monkeypatch, tiny_config):
    from pixperfect.training.objective import Objective

    monkeypatch.delitem(PIXEL_TERMS, "pyramid_l1")
    with pytest.raises(KeyError, match="loss.pyramid_l1, loss.tone_pyramid_l1 has no function"):
        Objective(tiny_config("loss.lpips=0", "loss.tone_lpips=0"))
