"""The loss building blocks of pixperfect.losses: discriminative tone mapping, offline LPIPS,
mask-aware adversarial terms. CPU only, small tensors."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from helpers import seeded, square_mask

from pixperfect.losses import (
    LPIPSFiles,
    add_instance_noise,
    apply_tone_curves,
    build_lpips,
    discriminative_tone_map,
    discriminator_loss,
    discriminator_loss_terms,
    fake_region,
    fit_tone_curves,
    generator_loss_terms,
    lpips_files,
    r1_due,
    r1_penalty,
    sample_betas,
)
from pixperfect.losses.tone_mapping import DiscriminativeToneMap

# ---------------------------------------------------------------- discriminative tone mapping


def _three_tone_scene(batch: int = 2, size: int = 32, shift: float = 0.01):
    """Background of tones {0.2, 0.5, 0.8}; the edit is flat 0.5 in gt and 0.5 + shift in pred.

    The true tone of the edit also appears (correct) in the background, the case the method
    is built for: an exact tone curve with slope ~beta between 0.5 and 0.5 + shift exists.
    """
    tones = torch.tensor([0.2, 0.5, 0.8])
    gt = tones[torch.randint(0, 3, (batch, 3, size, size), generator=seeded(7))]
    mask = square_mask(batch, size)
    gt = torch.where(mask.bool(), torch.full_like(gt, 0.5), gt)
    return gt + shift * mask, gt, mask


def test_tone_map_is_the_identity_when_the_prediction_equals_the_target():
    gt = torch.rand(2, 3, 32, 32, generator=seeded(1))
    mapped_pred, mapped_gt = discriminative_tone_map(gt.clone(), gt, square_mask(2), seeded())
    torch.testing.assert_close(mapped_pred, gt)
    torch.testing.assert_close(mapped_gt, gt)


def test_a_colour_error_whose_tone_is_right_in_the_background_is_amplified_about_beta():
    pred, gt, mask = _three_tone_scene(shift=0.01)
    beta = sample_betas(2, seeded(3))  # the betas the map will draw first from the same seed
    mapped_pred, mapped_gt = discriminative_tone_map(pred, gt, mask, seeded(3))
    diff = mapped_pred - mapped_gt
    inside = mask.expand_as(diff).bool()
    for b in range(2):
        amplified = diff[b][inside[b]]
        assert 20 <= beta[b] <= 40
        torch.testing.assert_close(
            amplified, torch.full_like(amplified, float(beta[b]) * 0.01), rtol=0.02, atol=0
        )
    assert diff[~inside].abs().max() < 1e-5  # correct pixels stay correct


@pytest.mark.parametrize("mask_fill", [0.0, 1.0, None])
@pytest.mark.parametrize("flat", [True, False])
def test_tone_map_is_finite_on_flat_images_and_on_empty_or_full_masks(mask_fill, flat):
    if flat:
        gt = torch.full((2, 3, 16, 16), 0.3)
    else:
        gt = torch.rand(2, 3, 16, 16, generator=seeded(2))
    mask = square_mask(2, 16, 4, 12) if mask_fill is None else torch.full((2, 1, 16, 16), mask_fill)
    for pred in (gt.clone(), gt + 0.02 * (mask if mask_fill is None else 1.0)):
        mapped_pred, mapped_gt = discriminative_tone_map(pred, gt, mask, seeded())
        assert torch.isfinite(mapped_pred).all() and torch.isfinite(mapped_gt).all()
        assert mapped_pred.min() >= 0 and mapped_pred.max() <= 1


def test_gradients_reach_the_prediction_but_not_through_the_curve():
    pred, gt, mask = _three_tone_scene(shift=0.01)
    pred = pred.requires_grad_(True)
    mapped_pred, mapped_gt = discriminative_tone_map(pred, gt, mask, seeded(4), clamp=(-10, 10))
    assert mapped_pred.requires_grad and not mapped_gt.requires_grad  # coeffs are constants
    mapped_pred.sum().backward()
    # The gradient is exactly f'(pred) of the fitted curve: no term through the coefficients.
    generator = seeded(4)
    coeffs = fit_tone_curves(pred, gt, mask, sample_betas(2, generator), generator)
    assert not coeffs.requires_grad
    t = 2 * pred.detach() - 1
    q = coeffs.float()[..., None, None]
    slope = 1 + sum(2 * d * q[:, :, d] * t ** (d - 1) for d in range(1, q.shape[2]))
    torch.testing.assert_close(pred.grad, slope, rtol=1e-3, atol=1e-3)


def test_tone_map_is_deterministic_for_a_given_generator():
    pred = torch.rand(2, 3, 16, 16, generator=seeded(5))
    gt = (pred + 0.05 * torch.rand(2, 3, 16, 16, generator=seeded(6))).clamp(0, 1)
    mask = square_mask(2, 16, 2, 10)
    first = discriminative_tone_map(pred, gt, mask, seeded(11), samples_per_region=64)
    again = DiscriminativeToneMap(samples_per_region=64)(pred, gt, mask, seeded(11))
    other = discriminative_tone_map(pred, gt, mask, seeded(12), samples_per_region=64)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first[0], other[0])


def test_each_sample_of_a_batch_gets_its_own_curve_and_low_precision_inputs_work():
    pred, gt, mask = _three_tone_scene(batch=3, shift=0.01)
    pred[1] = gt[1]  # sample 1 is already right ...
    mask[1] = 0
    mask[1, :, :4] = 1  # ... and has another mask; sample 2 has an empty mask
    mask[2] = 0
    beta = torch.tensor([25.0, 30.0, 35.0])
    coeffs = fit_tone_curves(pred.bfloat16(), gt.bfloat16(), mask, beta, seeded())
    assert coeffs.shape == (3, 3, 6) and torch.isfinite(coeffs).all()
    coeffs = fit_tone_curves(pred, gt, mask, beta, seeded())
    diff = apply_tone_curves(pred, coeffs) - apply_tone_curves(gt, coeffs)
    assert apply_tone_curves(pred.bfloat16(), coeffs).dtype == torch.float32
    assert diff[1].abs().max() < 1e-5  # identity for the correct sample
    inside = square_mask(1, 32)[0].expand(3, -1, -1).bool()
    torch.testing.assert_close(diff[0][inside].mean(), torch.tensor(0.25), rtol=0.02, atol=0)


# ---------------------------------------------------------------- LPIPS from local files


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so nothing staged on this machine is found by accident."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def random_alexnet_features():
    """A *randomly initialised* AlexNet's conv stack: it only exercises the loading code; the
    distances it gives are not LPIPS."""
    from torchvision.models import alexnet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = alexnet().state_dict()
    return {k: v for k, v in state.items() if k.startswith("features.")}


def test_a_missing_backbone_is_an_error_naming_the_file_and_how_to_stage_it(offline_hub):
    with pytest.raises(FileNotFoundError) as error:
        build_lpips("alex")
    message = str(error.value)
    assert str(offline_hub / "alexnet-owt-7be5be79.pth") in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    assert "TORCH_HOME" in message and "weights_dir" in message


def test_skip_mode_disables_lpips_with_a_warning(offline_hub, caplog):
    with caplog.at_level(logging.WARNING, logger="pixperfect.losses.lpips"):
        assert build_lpips("alex", on_missing="skip") is None
    assert "alexnet-owt-7be5be79.pth" in caplog.text and "disabled" in caplog.text


def test_missing_linear_weights_are_named_with_their_url(tmp_path):
    linear = tmp_path / "lpips_v0.1_alex.pth"
    files = LPIPSFiles(
        "alex", "https://x/a.pth", (tmp_path / "a.pth",), "https://y/alex.pth", (linear,)
    )
    message = files.missing_message()
    assert "https://y/alex.pth" in message and str(linear) in message


def test_the_lpips_wheel_ships_the_linear_weights():
    assert lpips_files("alex").linear is not None


def test_staged_weights_load_strictly_and_give_a_differentiable_distance(
    offline_hub, tmp_path, random_alexnet_features
):
    torch.save(random_alexnet_features, tmp_path / "alexnet-owt-7be5be79.pth")
    loss = build_lpips("alex", weights_dir=tmp_path)
    network = loss.network
    # Every tensor came from the files: the staged backbone and the shipped linear layers.
    torch.testing.assert_close(
        network.net.slice3.get_submodule("6").weight, random_alexnet_features["features.6.weight"]
    )
    shipped = torch.load(lpips_files("alex").linear, map_location="cpu", weights_only=True)
    torch.testing.assert_close(network.lins[4].model[1].weight, shipped["lin4.model.1.weight"])
    # Frozen and kept out of parameters / checkpoints; stays in eval mode.
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    loss.train()
    assert not network.training

    x = torch.rand(2, 3, 64, 64, generator=seeded(1), requires_grad=True)
    y = torch.rand(2, 3, 64, 64, generator=seeded(2))
    distance = loss(x, y)
    assert distance.shape == (2,) and (distance > 0).all()
    torch.testing.assert_close(loss(y, y), torch.zeros(2))
    distance.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_backbone_file_lacking_layers_is_refused(offline_hub, tmp_path, random_alexnet_features):
    partial = {k: v for k, v in random_alexnet_features.items() if not k.startswith("features.8")}
    torch.save(partial, tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(ValueError, match="features.8.weight"):
        build_lpips("alex", weights_dir=tmp_path)


# ---------------------------------------------------------------- adversarial terms


def _labels(size: int = 8, band: int = 1) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, 3:5, 3:5] = 1
    return fake_region(mask, (size, size), band)


def test_fake_region_is_the_mask_dilated_by_the_band_pooled_to_the_logit_grid():
    labels = _labels(band=1)
    expected = torch.zeros(1, 1, 8, 8)
    expected[:, :, 2:6, 2:6] = 1
    torch.testing.assert_close(labels, expected)
    # Pooled 2x: a logit counts as fake when any pixel of its patch does.
    mask = torch.zeros(1, 1, 8, 8)
    mask[:, :, 3:5, 3:5] = 1
    coarse = fake_region(mask, (4, 4), band=1)
    assert coarse[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def test_d_loss_falls_when_reals_score_higher_and_fake_edits_lower():
    labels = _labels()
    logits = torch.zeros(1, 1, 8, 8)
    start = discriminator_loss_terms(logits, logits, labels).loss
    better_fake = torch.where(labels.bool(), torch.tensor(-2.0), torch.tensor(2.0))
    better = discriminator_loss_terms(logits + 2, better_fake, labels)
    assert better.loss < start
    torch.testing.assert_close(better.loss, better.real + better.fake + better.fake_background)
    # ... and the non-saturating G loss rises when D wins, falls when the fake scores real.
    assert generator_loss_terms(better_fake) > generator_loss_terms(better_fake + 5)


def test_fake_logits_outside_the_band_do_not_count_as_fake():
    labels = _labels()
    real_logits = torch.zeros(1, 1, 8, 8)
    base = torch.randn(1, 1, 8, 8, generator=seeded(0))
    outside = torch.where(labels.bool(), base, torch.tensor(9.0))
    also_outside = torch.where(labels.bool(), base, torch.tensor(-9.0))
    a = discriminator_loss_terms(real_logits, outside, labels)
    b = discriminator_loss_terms(real_logits, also_outside, labels)
    torch.testing.assert_close(a.fake, b.fake)  # the 'fake' term sees the band only
    assert b.fake_background > a.fake_background  # the background of a fake counts as real
    inside_changed = discriminator_loss_terms(real_logits, outside + 9 * labels, labels)
    assert inside_changed.fake > a.fake


def test_the_d_step_does_not_reach_the_generator():
    fake = torch.rand(1, 3, 8, 8, requires_grad=True)
    weight = torch.ones(1, 4, 1, 1, requires_grad=True)

    def discriminator(x, m):
        return F.conv2d(torch.cat([x, m], 1), weight)

    mask = torch.zeros(1, 1, 8, 8)
    discriminator_loss(discriminator, torch.rand(1, 3, 8, 8), fake, mask).loss.backward()
    assert fake.grad is None and weight.grad is not None


def _linear_discriminator(weight: torch.Tensor):
    """logits = sum_c w_c x_c at every pixel (the mask is an input D ignores)."""
    return lambda x, m: F.conv2d(x, weight.view(1, -1, 1, 1))


def test_r1_is_zero_for_a_discriminator_that_ignores_its_input():
    real, mask = torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8)
    bias = torch.tensor(0.3, requires_grad=True)
    assert r1_penalty(lambda x, m: bias.expand(2, 1, 4, 4), real, mask, gamma=10.0) == 0
    assert r1_penalty(lambda x, m: 0 * x[:, :1] + bias, real, mask, gamma=10.0) == 0


def test_r1_of_a_linear_discriminator_has_its_closed_form_and_trains_d():
    weight = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    real, mask = torch.rand(2, 3, 8, 8).bfloat16(), torch.ones(2, 1, 8, 8)
    gamma = 4.0
    penalty = r1_penalty(_linear_discriminator(weight), real, mask, gamma=gamma)
    # d sum(logits) / d x_{c,h,w} = w_c, so ||grad||^2 = H * W * |w|^2 for every sample.
    expected = gamma / 2 * 8 * 8 * weight.detach().square().sum()
    assert penalty.dtype == torch.float32
    torch.testing.assert_close(penalty, expected)
    penalty.backward()  # create_graph: the penalty has a gradient w.r.t. D's weights
    torch.testing.assert_close(weight.grad, gamma * 8 * 8 * weight.detach())


def test_lazy_r1_runs_every_n_steps_scaled_by_n():
    weight = torch.tensor([1.0, 1.0, 1.0])
    real, mask = torch.rand(1, 3, 4, 4), torch.ones(1, 1, 4, 4)
    eager = r1_penalty(_linear_discriminator(weight), real, mask, gamma=1.0)
    lazy = r1_penalty(_linear_discriminator(weight), real, mask, gamma=1.0, every=16)
    torch.testing.assert_close(lazy, 16 * eager)
    assert [s for s in range(40) if r1_due(s, 16)] == [0, 16, 32]
    assert not any(r1_due(s, 0) for s in range(4))  # every=0: R1 off


def test_instance_noise_is_reproducible_with_a_generator():
    x = torch.rand(2, 3, 8, 8)
    assert add_instance_noise(x, 0.0, seeded()) is x
    noisy = add_instance_noise(x, 0.05, seeded(9))
    torch.testing.assert_close(noisy, add_instance_noise(x, 0.05, seeded(9)), rtol=0, atol=0)
    assert not torch.equal(noisy, add_instance_noise(x, 0.05, seeded(10)))
    assert 0.04 < (noisy - x).std() < 0.06
