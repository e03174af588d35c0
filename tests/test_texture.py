"""Tests for the texture-mismatch family (data_sim.texture, docs/method.md §5.2)."""

from __future__ import annotations

from pathlib import Path

import kornia
import pytest
import torch
from assets import KODAK, TAESD_DIR, require
from helpers import psnr_db
from torch import Tensor

from data_sim.codecs import LatentCodec
from data_sim.texture import (
    TextureConfig,
    TextureFamily,
    VAEConfig,
    apply_texture,
    apply_texture_inside,
    apply_texture_outside,
    sample_texture_params,
)

NO_VAE = VAEConfig(kind="none")


def _luma(x: Tensor) -> Tensor:
    return kornia.color.rgb_to_ycbcr(x)[:, :1]


def _params(cfg: TextureConfig, batch_size: int, seed: int = 0, **overrides) -> dict:
    """Params drawn from ``cfg`` with some entries replaced by constants per sample."""
    params = sample_texture_params(batch_size, cfg, torch.Generator().manual_seed(seed))
    for key, value in overrides.items():
        dtype = params[key].dtype
        params[key] = torch.as_tensor(value, dtype=dtype).expand(batch_size).clone()
    return params


class CountingCodec(LatentCodec):
    """A weightless codec that inverts images and records the batch sizes it encodes."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def encode(self, x01: Tensor) -> Tensor:
        self.batch_sizes.append(x01.shape[0])
        return x01

    def decode(self, z: Tensor) -> Tensor:
        return 1.0 - z


@pytest.fixture
def images() -> Tensor:
    g = torch.Generator().manual_seed(1)
    # Smooth random images (a blurred field) look more like photos to JPEG than white noise.
    x = torch.rand(6, 3, 16, 16, generator=g)
    return torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear").clamp(0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_keep_shape_dtype_device_and_range(images: Tensor, dtype: torch.dtype) -> None:
    cfg = TextureConfig(p=1.0, vae=NO_VAE, jpeg_p=1.0)
    x = images.to(dtype)
    inside, outside = apply_texture(x, _params(cfg, len(x)))
    for out in (inside, outside):
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, x)


def test_same_seed_gives_same_params_and_outputs(images: Tensor) -> None:
    cfg = TextureConfig(p=0.7, vae=NO_VAE)
    a, b = _params(cfg, len(images), seed=5), _params(cfg, len(images), seed=5)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out_a, out_b = apply_texture(images, a), apply_texture(images, b)
    assert torch.equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])
    other = apply_texture(images, _params(cfg, len(images), seed=6))
    assert not torch.equal(out_a[1], other[1])


def test_samples_not_applied_are_bit_exact_in_both_outputs(images: Tensor) -> None:
    codec = CountingCodec()
    cfg = TextureConfig(p=1.0, jpeg_p=1.0)
    params = _params(cfg, len(images), vae=True)
    params["applied"] = torch.tensor([True, False, True, False, False, True])
    inside, outside = apply_texture(images, params, codec)
    keep = ~params["applied"]
    assert torch.equal(inside[keep], images[keep]) and torch.equal(outside[keep], images[keep])
    changed = params["applied"]
    assert (inside[changed] - images[changed]).abs().amax(dim=(1, 2, 3)).gt(1e-3).all()
    assert (outside[changed] - images[changed]).abs().amax(dim=(1, 2, 3)).gt(1e-3).all()

    params["applied"][:] = False
    inside, outside = apply_texture(images, params, codec)
    assert torch.equal(inside, images) and torch.equal(outside, images)


def test_probabilities_are_honoured_over_many_draws() -> None:
    cfg = TextureConfig(
        p=0.5, jpeg_p=0.7, vae=VAEConfig(kind="taesd", p=0.4), inside_noise_luma_p=0.25
    )
    params = sample_texture_params(20000, cfg, torch.Generator().manual_seed(0))
    applied = params["applied"]
    assert abs(applied.float().mean().item() - 0.5) < 0.02
    # Round trip and JPEG only ever on applied samples, at their share of them.
    assert not (params["vae"] & ~applied).any() and not (params["jpeg"] & ~applied).any()
    assert abs(params["vae"][applied].float().mean().item() - 0.4) < 0.02
    assert abs(params["jpeg"][applied].float().mean().item() - 0.7) < 0.02
    assert abs(params["inside_noise_luma"].float().mean().item() - 0.25) < 0.02
    lo, hi = cfg.jpeg_quality
    assert params["jpeg_quality"].min() >= lo and params["jpeg_quality"].max() <= hi
    assert all(v.shape[0] == 20000 for v in params.values())


def test_vae_kind_none_never_asks_for_a_round_trip() -> None:
    cfg = TextureConfig(p=1.0, vae=VAEConfig(kind="none", p=1.0))
    assert not sample_texture_params(64, cfg, torch.Generator().manual_seed(0))["vae"].any()


def test_jpeg_at_low_quality_changes_the_background_and_quality_100_barely(photo) -> None:
    x = photo[None]
    cfg = TextureConfig(p=1.0, vae=NO_VAE)
    params = _params(cfg, 1, jpeg=True, outside_noise_sigma=0.0)
    params["jpeg_quality"] = torch.tensor([40.0])
    low = apply_texture_outside(x, params)
    params["jpeg_quality"] = torch.tensor([100.0])
    best = apply_texture_outside(x, params)
    # Compared on luma: 4:2:0 chroma subsampling costs colour detail at any quality.
    assert psnr_db(_luma(low), _luma(x)) < 35
    assert psnr_db(_luma(best), _luma(x)) > 50


def test_odd_sizes_work_with_jpeg_and_blur() -> None:
    x = torch.rand(3, 3, 50, 70, generator=torch.Generator().manual_seed(2))
    cfg = TextureConfig(p=1.0, vae=NO_VAE)
    params = _params(cfg, 3, jpeg=True, jpeg_quality=30.0, blur_sigma=0.8)
    inside, outside = apply_texture(x, params)
    assert inside.shape == outside.shape == x.shape
    assert psnr_db(outside, x) < 40 and psnr_db(inside, x) < 40


def test_zero_blur_and_zero_noise_leave_the_inside_unchanged(images: Tensor) -> None:
    cfg = TextureConfig(p=1.0, vae=NO_VAE)
    params = _params(cfg, len(images), blur_sigma=0.0, inside_noise_sigma=0.0)
    assert torch.equal(apply_texture_inside(images, params), images)


def test_blur_of_a_sample_does_not_depend_on_its_batch_mates(images: Tensor) -> None:
    cfg = TextureConfig(p=1.0, vae=NO_VAE)
    params = _params(cfg, len(images), inside_noise_sigma=0.0)
    params["blur_sigma"] = torch.tensor([0.3, 1.0, 0.0, 2.0, 0.7, 0.06])
    together = apply_texture_inside(images, params)
    for i in range(len(images)):
        alone = apply_texture_inside(
            images[i : i + 1], {k: v[i : i + 1] for k, v in params.items()}
        )
        torch.testing.assert_close(alone, together[i : i + 1], atol=1e-4, rtol=0)


def test_luma_noise_is_grey_and_colour_noise_is_not() -> None:
    x = torch.full((2, 3, 32, 32), 0.5)
    cfg = TextureConfig(p=1.0, vae=NO_VAE)
    params = _params(cfg, 2, blur_sigma=0.0, inside_noise_sigma=0.02)
    params["inside_noise_luma"] = torch.tensor([True, False])
    noise = apply_texture_inside(x, params) - x
    assert torch.equal(noise[0, 0], noise[0, 1]) and torch.equal(noise[0, 0], noise[0, 2])
    assert not torch.equal(noise[1, 0], noise[1, 1])
    assert 0.015 < float(noise.std()) < 0.025


def test_inside_and_outside_noise_are_independent() -> None:
    x = torch.full((1, 3, 32, 32), 0.5)
    cfg = TextureConfig(p=1.0, vae=NO_VAE)
    params = _params(
        cfg, 1, blur_sigma=0.0, jpeg=False, inside_noise_sigma=0.01, outside_noise_sigma=0.01
    )
    inside, outside = apply_texture(x, params)
    corr = torch.corrcoef(torch.stack([(inside - x).flatten(), (outside - x).flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1


def test_round_trip_runs_only_on_the_selected_subset(images: Tensor) -> None:
    codec = CountingCodec()
    cfg = TextureConfig(p=1.0, vae=VAEConfig(kind="none"))
    params = _params(cfg, len(images), blur_sigma=0.0, inside_noise_sigma=0.0)
    params["applied"] = torch.tensor([True, True, False, True, True, True])
    # Sample 2 asks for a round trip but is not applied: it must not be encoded.
    params["vae"] = torch.tensor([False, True, True, False, True, False])
    inside = apply_texture_inside(images, params, codec, chunk_size=8)
    assert codec.batch_sizes == [2]
    vae = params["vae"] & params["applied"]
    torch.testing.assert_close(inside[vae], 1.0 - images[vae])
    assert torch.equal(inside[~vae], images[~vae])


def test_family_builds_its_codec_lazily_and_only_when_needed(tmp_path: Path) -> None:
    cfg = TextureConfig(p=1.0, vae=VAEConfig(kind="taesd", path=str(tmp_path / "missing"), p=0.0))
    family = TextureFamily(cfg)  # no weights read yet
    x = torch.rand(2, 3, 32, 32)
    family(x, family.sample(2, 32, 32, torch.Generator().manual_seed(0)))  # p=0: no codec needed
    with pytest.raises(FileNotFoundError, match="taef2_encoder"):
        _ = family.codec


def test_missing_codec_for_a_requested_round_trip_is_refused(images: Tensor) -> None:
    params = _params(TextureConfig(p=1.0), len(images), vae=True)
    with pytest.raises(ValueError, match="no codec"):
        apply_texture_inside(images, params, None)


def test_vae_kind_none_works_without_weights(images: Tensor) -> None:
    family = TextureFamily(TextureConfig(p=1.0, vae=VAEConfig(kind="none", path=None)))
    inside, outside = family(images, family.sample(len(images), 48, 48, torch.Generator()))
    assert family.codec is None and inside.shape == outside.shape == images.shape


@pytest.mark.parametrize(
    "change",
    [
        {"p": 1.5},
        {"blur_sigma": (1.0, 0.5)},
        {"jpeg_quality": (0.0, 90.0)},
        {"vae": VAEConfig(kind="sdxl")},
        {"vae": VAEConfig(chunk_size=0)},
    ],
)
def test_invalid_config_is_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        TextureConfig(**change).validate()


def test_taef2_round_trip_changes_a_photo_but_keeps_it_close() -> None:
    require(TAESD_DIR / "taef2_encoder.pth")
    from torchvision.io import read_image

    photo = read_image(str(require(KODAK / "kodim23.png"))).float() / 255
    h, w = photo.shape[-2:]
    x = photo[None, :, (h - 128) // 2 : (h + 128) // 2, (w - 128) // 2 : (w + 128) // 2]
    x = x.contiguous()
    cfg = TextureConfig(p=1.0, vae=VAEConfig(kind="taesd", path=str(TAESD_DIR)))
    family = TextureFamily(cfg)
    params = _params(cfg, 1, vae=True, blur_sigma=0.5, inside_noise_sigma=0.005)
    inside = family.inside(x, params)
    assert inside.shape == x.shape
    psnr = psnr_db(inside, x)
    assert 25.0 < psnr < 45.0, psnr
