"""Tests for the latent codecs (data_sim.codecs): TAESD/TAEF2 and diffusers round trips."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from assets import KODAK, TAESD_DIR, require
from helpers import psnr_db

from data_sim.codecs import DiffusersCodec, LatentCodec, TAESDCodec, build_codec
from data_sim.codecs.diffusers_codec import import_diffusers
from data_sim.codecs.taesd import (
    TAEF2_DECODER_POOLS,
    TAEF2_ENCODER_POOLS,
    build_decoder,
    build_encoder,
    load_state_dict_file,
)

KODIM23 = KODAK / "kodim23.png"


def _require_diffusers():
    try:
        return import_diffusers()
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("diffusers is not installed (pip install 'pixperfect[diffusers]')")
        pytest.skip("diffusers is not installed")


def _random_taef2_layout(seed: int = 0) -> TAESDCodec:
    """An untrained codec with the TAEF2 layout (32 latents, group-norm pools): no files."""
    torch.manual_seed(seed)
    return TAESDCodec(
        build_encoder(32, TAEF2_ENCODER_POOLS), build_decoder(32, TAEF2_DECODER_POOLS)
    )


@pytest.fixture(scope="module")
def taef2() -> TAESDCodec:
    codec = build_codec("taesd", str(require(TAESD_DIR / "taef2_encoder.pth").parent))
    assert isinstance(codec, TAESDCodec)
    return codec


def test_taef2_roundtrip_of_real_photo_exceeds_30db_psnr(taef2: TAESDCodec) -> None:
    from PIL import Image

    rgb = np.array(Image.open(require(KODIM23)).convert("RGB"))
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    # A central 256x256 crop keeps the test fast; the full 768x512 image gives ~33.4 dB.
    crop = image[..., 128:384, 256:512]
    out = taef2.roundtrip(crop)
    psnr = psnr_db(out, crop)
    assert psnr > 30.0, f"TAEF2 round trip PSNR {psnr:.2f} dB (wrong [0,1] scaling gives ~18)"
    # A codec is lossy: an identity "round trip" would also pass the bound above.
    assert psnr < 45.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_roundtrip_keeps_shape_dtype_device_and_range_on_odd_size(dtype: torch.dtype) -> None:
    codec = _random_taef2_layout()
    images = torch.rand(1, 3, 77, 61, generator=torch.Generator().manual_seed(1)).to(dtype)
    before = images.clone()
    out = codec.roundtrip(images)
    assert out.shape == images.shape
    assert out.dtype == dtype
    assert out.device == images.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not out.is_inference(), "callers must be able to use the result in autograd"
    assert torch.equal(images, before), "the input must not be modified"


def test_roundtrip_handles_images_smaller_than_the_stride() -> None:
    # Reflect padding needs pad < side; a 5x3 image must fall back to replicate padding.
    out = _random_taef2_layout().roundtrip(torch.rand(1, 3, 5, 3))
    assert out.shape == (1, 3, 5, 3)


def test_roundtrip_of_an_empty_batch_is_empty() -> None:
    out = _random_taef2_layout().roundtrip(torch.rand(0, 3, 16, 16))
    assert out.shape == (0, 3, 16, 16)


def test_chunked_roundtrip_equals_unchunked() -> None:
    codec = _random_taef2_layout(seed=3)
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    one_by_one = codec.roundtrip(images, chunk_size=1)
    all_at_once = codec.roundtrip(images, chunk_size=8)
    assert all_at_once.shape == images.shape
    torch.testing.assert_close(one_by_one, all_at_once, atol=1e-5, rtol=0)


def test_roundtrip_ignores_an_enclosing_autocast_region() -> None:
    codec = _random_taef2_layout(seed=4)
    images = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(5))
    reference = codec.roundtrip(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = codec.roundtrip(images)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, atol=1e-6, rtol=0)


def test_roundtrip_refuses_a_half_precision_codec() -> None:
    codec = _random_taef2_layout().half()
    with pytest.raises(TypeError, match="float32"):
        codec.roundtrip(torch.rand(1, 3, 8, 8))


def test_roundtrip_refuses_a_non_positive_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        _random_taef2_layout().roundtrip(torch.rand(1, 3, 8, 8), chunk_size=0)


def test_missing_weights_raise_file_not_found_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        TAESDCodec.from_dir(tmp_path, variant="taef2")
    message = str(err.value)
    assert "taef2_encoder.pth" in message and "taef2_decoder.pth" in message
    assert "sim.texture.vae.path" in message and "madebyollin/taesd" in message

    # With only the encoder present, only the decoder is reported missing.
    encoder_state = build_encoder(32, TAEF2_ENCODER_POOLS).half().state_dict()
    torch.save(encoder_state, tmp_path / "taef2_encoder.pth")
    with pytest.raises(FileNotFoundError) as err:
        build_codec("taesd", str(tmp_path))
    assert "taef2_decoder.pth" in str(err.value)
    assert "taef2_encoder.pth" not in str(err.value).split(";")[0]


def test_classic_layout_loads_from_pth_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    # TAEF1/TAESD3-like: 16 latent channels, no pools; fp16 files as released.
    torch.manual_seed(0)
    encoder, decoder = build_encoder(16), build_decoder(16)
    torch.save(encoder.half().state_dict(), tmp_path / "taef1_encoder.pth")
    save_file(decoder.half().state_dict(), os.fspath(tmp_path / "taef1_decoder.safetensors"))
    codec = TAESDCodec.from_dir(tmp_path, variant="taef1")
    assert codec.latent_channels == 16
    assert not any(".pool." in k for k in codec.state_dict())
    assert all(p.dtype == torch.float32 for p in codec.parameters())
    assert codec.roundtrip(torch.rand(1, 3, 16, 24)).shape == (1, 3, 16, 24)


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8), "floating dtype"),
        (torch.rand(1, 1, 16, 16), "3 (RGB) channels"),
        (torch.rand(1, 3, 16, 16) * 255.0, "divide by 255"),
        (torch.rand(3, 16, 16), "4-D tensor"),
        (torch.rand(1, 3, 16, 16) * 2.0 - 1.0, "(x + 1) / 2"),
        (torch.full((1, 3, 16, 16), float("nan")), "values in [0,1]"),
    ],
    ids=["uint8", "one-channel", "0-255", "3-D", "minus1-1", "nan"],
)
def test_bad_inputs_raise_value_error_naming_expected_and_received(
    images: torch.Tensor, expected: str
) -> None:
    with pytest.raises(ValueError) as err:
        _random_taef2_layout().roundtrip(images)
    message = str(err.value)
    assert "expected" in message and "received" in message
    assert expected in message


def test_taesd_codec_state_dict_matches_released_files(taef2: TAESDCodec) -> None:
    for part, module in (("encoder", taef2.encoder), ("decoder", taef2.decoder)):
        released = load_state_dict_file(TAESD_DIR / f"taef2_{part}.pth")
        ours = module.state_dict()
        assert list(ours) == list(released)
        assert all(ours[k].shape == released[k].shape for k in released)
        # The released file loads into a freshly built module with strict=True.
        fresh = (build_encoder if part == "encoder" else build_decoder)(
            32, TAEF2_ENCODER_POOLS if part == "encoder" else TAEF2_DECODER_POOLS
        )
        fresh.load_state_dict(released, strict=True)
    assert taef2.latent_channels == 32 and taef2.stride == 8


def test_codec_is_frozen_and_stays_in_eval_mode(taef2: TAESDCodec) -> None:
    assert all(not p.requires_grad for p in taef2.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in taef2.parameters())
    taef2.train()  # e.g. a parent LightningModule entering training
    assert not taef2.training and not any(m.training for m in taef2.modules())


def test_build_codec_none_and_unknown_kinds() -> None:
    assert build_codec("none") is None
    with pytest.raises(ValueError, match="one of"):
        build_codec("vqgan", "/nowhere")
    with pytest.raises(ValueError, match=r"sim\.texture\.vae\.path"):
        build_codec("taesd", None)


def test_latent_codec_is_abstract() -> None:
    with pytest.raises(TypeError):
        LatentCodec()  # type: ignore[abstract]


def test_diffusers_autoencoder_kl_roundtrip_preserves_shape_and_range() -> None:
    diffusers = _require_diffusers()
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.5,
        shift_factor=0.1,
    )
    codec = DiffusersCodec.from_model(model)
    assert codec.stride == 2  # two stages: one 2x downsample
    images = torch.rand(3, 3, 21, 19, dtype=torch.float64)
    out = codec.roundtrip(images, chunk_size=2)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    # Scaling: [0,1] -> [-1,1] into the VAE, the posterior mean, then (z - shift) * scale,
    # undone exactly in decode().
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        z = codec.encode(x)
        mean = model.encode(x * 2 - 1).latent_dist.mode()
        torch.testing.assert_close(z, (mean - 0.1) * 0.5)
        expected = (model.decode(mean).sample + 1) / 2
        torch.testing.assert_close(codec.decode(z), expected, atol=1e-5, rtol=1e-5)


def test_diffusers_autoencoder_tiny_matches_taesd_codec_with_same_weights() -> None:
    # diffusers' AutoencoderTiny works in [-1,1] (it converts to TAESD's [0,1] inside);
    # with the same weights both paths must give the same round trip.
    diffusers = _require_diffusers()
    torch.manual_seed(0)
    taesd = TAESDCodec(build_encoder(4), build_decoder(4))
    tiny = diffusers.AutoencoderTiny(latent_channels=4)
    state = {f"encoder.layers.{k}": v for k, v in taesd.encoder.state_dict().items()}
    for k, v in taesd.decoder.state_dict().items():
        index, rest = k.split(".", 1)  # diffusers' decoder has no leading Clamp module
        state[f"decoder.layers.{int(index) - 1}.{rest}"] = v
    tiny.load_state_dict(state, strict=True)
    codec = DiffusersCodec.from_model(tiny)
    assert codec.stride == 8
    images = torch.rand(2, 3, 27, 35)
    torch.testing.assert_close(
        codec.roundtrip(images), taesd.roundtrip(images), atol=1e-5, rtol=1e-5
    )


def test_diffusers_codec_loads_a_saved_model_folder(tmp_path: Path) -> None:
    diffusers = _require_diffusers()
    tiny = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    tiny.save_pretrained(tmp_path / "vae")
    codec = build_codec("diffusers", str(tmp_path), subfolder="vae")
    assert isinstance(codec, DiffusersCodec) and isinstance(codec.model, diffusers.AutoencoderTiny)
    assert codec.stride == 2
    assert codec.roundtrip(torch.rand(1, 3, 9, 7)).shape == (1, 3, 9, 7)


def test_missing_diffusers_raises_import_error_with_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    with pytest.raises(ImportError, match=r"pixperfect\[diffusers\]"):
        DiffusersCodec.from_pretrained("any/vae")
