"""The paper-scale models: the FFC refiner (same contract as the U-Net, global receptive
field, bf16-safe FFT) and the mask-conditioned spectral-norm discriminator."""

from dataclasses import asdict

import pytest
import torch
from torch import nn

from pixperfect.config import ModelConfig
from pixperfect.losses.adversarial import fake_region
from pixperfect.models import FFCRefiner, build_discriminator, build_refiner
from pixperfect.models.ffc import FourierUnit

TINY = {
    "ffc": {"base_channels": 4, "depth": 2, "ffc_blocks": 1},
    "unet": {"base_channels": 4, "depth": 2},
}


def _inputs(h: int, w: int, batch: int = 1, dtype: torch.dtype = torch.float32):
    composite = torch.rand(batch, 3, h, w, dtype=dtype)
    mask = torch.zeros(batch, 1, h, w, dtype=dtype)
    mask[..., h // 4 : h // 2, w // 4 : w // 2] = 1
    return composite, mask


@pytest.mark.parametrize("size", [(4, 4), (16, 16), (12, 20), (36, 28)])
def test_ffc_output_has_the_input_shape(size):
    model = build_refiner("ffc", **TINY["ffc"])
    composite, mask = _inputs(*size, batch=2)
    assert model(composite, mask).shape == composite.shape


@pytest.mark.parametrize("name", ["unet", "ffc"])
def test_sizes_off_the_stride_are_refused_naming_it(name):
    model = build_refiner(name, **TINY[name])
    with pytest.raises(ValueError, match="multiple of the refiner stride 4"):
        model(*_inputs(16, 18))


def test_ffc_default_width_is_paper_scale():
    model = build_refiner("ffc")
    n = sum(p.numel() for p in model.parameters())
    assert 30e6 <= n <= 50e6, f"{n / 1e6:.1f}M parameters"
    assert model.stride == 8


def test_ffc_builds_from_the_model_config_keys():
    keys = asdict(ModelConfig(name="ffc", base_channels=4, depth=2))
    model = build_refiner(keys.pop("name"), **keys)
    assert isinstance(model, FFCRefiner) and model.stride == 4


@pytest.mark.parametrize("name", ["unet", "ffc"])
def test_untrained_refiner_is_near_identity_but_not_exactly(name):
    torch.manual_seed(0)
    model = build_refiner(name, **TINY[name])
    composite, mask = _inputs(32, 32)
    correction = model(composite, mask) - composite
    # Near zero so training starts from the identity; not exactly zero so it can learn.
    assert 0 < correction.abs().max() < 0.05


def _change_from_one_corner(name: str, **kwargs) -> torch.Tensor:
    """|output change| per pixel when only the top-left input pixel changes (float64, so a
    small but real global effect stands far above rounding)."""
    torch.manual_seed(0)
    model = build_refiner(name, **{**TINY[name], **kwargs}).double()
    if getattr(model, "context", None) is not None:  # give the zero-started branch weights
        torch.nn.init.normal_(model.context.mlp[-1].weight, std=0.1)
    composite, mask = _inputs(64, 64, dtype=torch.float64)
    poked = composite.clone()
    poked[..., 0, 0] = 1 - poked[..., 0, 0]
    with torch.no_grad():
        before = model(composite, mask) - composite
        after = model(poked, mask) - poked
    return (after - before).abs().amax(dim=1)[0]


def test_ffc_sees_the_whole_image_and_the_unet_does_not():
    ffc = _change_from_one_corner("ffc")
    # Opposite corner, centre, and every other pixel: the spectral branch reaches them all.
    assert ffc[-1, -1] > 1e-12 and ffc[32, 32] > 1e-12
    assert ffc.min() > 1e-13
    unet = _change_from_one_corner("unet")
    assert unet[0, 0] > 0  # local effect present ...
    assert unet[-1, -1] == 0 and unet[32, 32] == 0  # ... but a bounded receptive field


def test_the_unet_global_branch_sees_the_whole_image_and_starts_as_a_no_op():
    unet = _change_from_one_corner("unet", global_context=True)
    assert unet[-1, -1] > 1e-12 and unet[32, 32] > 1e-12 and unet.min() > 1e-13
    torch.manual_seed(0)
    plain = build_refiner("unet", **TINY["unet"])
    torch.manual_seed(0)
    branched = build_refiner("unet", **TINY["unet"], global_context=True)
    composite, mask = _inputs(32, 32)
    with torch.no_grad():
        torch.testing.assert_close(branched(composite, mask), plain(composite, mask))


def test_ffc_runs_under_bf16_autocast():
    model = build_refiner("ffc", **TINY["ffc"])
    composite, mask = _inputs(32, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(composite, mask)
    assert out.shape == composite.shape and torch.isfinite(out).all()
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fourier_unit_computes_in_float32_and_returns_the_input_dtype():
    unit = FourierUnit(2)
    x = torch.rand(1, 2, 8, 10, dtype=torch.bfloat16)  # torch.fft has no bf16 kernels
    y = unit(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    reference = unit(x.float())
    assert torch.allclose(y.float(), reference, atol=1e-2)


@pytest.mark.parametrize("size", [(64, 64), (32, 96)])
def test_discriminator_logits_are_the_input_grid_over_its_stride(size):
    disc = build_discriminator("patch", base_channels=8, n_down=3)
    image, mask = _inputs(*size, batch=2)
    logits = disc(image, mask)
    assert disc.stride == 8
    assert logits.shape == (2, 1, size[0] // 8, size[1] // 8)
    labels = fake_region(mask, logits.shape[-2:], band=0)  # the loss's labels
    assert labels.shape == logits.shape and set(labels.unique().tolist()) <= {0.0, 1.0}
    assert labels.sum() > 0


def test_every_discriminator_conv_is_spectrally_normalised():
    disc = build_discriminator("patch", base_channels=8)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) >= 3
    for conv in convs:
        assert nn.utils.parametrize.is_parametrized(conv, "weight")
        assert type(conv.parametrizations.weight[0]).__name__ == "_SpectralNorm"


def test_discriminator_input_gradient_supports_r1():
    disc = build_discriminator("patch", base_channels=8)
    image, mask = _inputs(32, 32, batch=2)
    image.requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(image, mask).sum(), image, create_graph=True)
    assert grad.abs().sum() > 0
    grad.square().sum().backward()  # the R1 penalty needs a second backward through D
    for conv in (m for m in disc.modules() if isinstance(m, nn.Conv2d)):
        weight = conv.parametrizations.weight.original
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_unknown_discriminator_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="patch"):
        build_discriminator("stylegan")
