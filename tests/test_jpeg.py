"""Tests for the batched baseline JPEG (data_sim.jpeg) against libjpeg itself, through PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from assets import KODAK, require
from helpers import psnr_db
from PIL import Image
from torch import Tensor

from data_sim.jpeg import jpeg_roundtrip, quantization_tables


def _pil_jpeg(image: Tensor, quality: int) -> Tensor:
    """libjpeg's round trip of one (3, H, W) image at PIL's defaults (4:2:0, IJG tables)."""
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def kodak_crops() -> Tensor:
    """Four real photos, 256x256 crops (Kodak, lossless PNG)."""
    folder = require(KODAK)
    crops = []
    for name in ("kodim01.png", "kodim05.png", "kodim13.png", "kodim23.png"):
        pixels = np.asarray(Image.open(folder / name).convert("RGB"))[:256, :256]
        crops.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(crops)


@pytest.mark.parametrize("quality", [40, 60, 75, 95])
def test_roundtrip_matches_libjpeg_on_real_photos(kodak_crops: Tensor, quality: int) -> None:
    ours = jpeg_roundtrip(kodak_crops, torch.full((len(kodak_crops),), float(quality)))
    reference = torch.stack([_pil_jpeg(image, quality) for image in kodak_crops])
    # Same distortion as libjpeg (within 0.05 dB), and close to its pixels; the rest is
    # libjpeg's integer DCT and fixed-point colour conversion.
    assert abs(psnr_db(ours, kodak_crops) - psnr_db(reference, kodak_crops)) < 0.05
    assert psnr_db(ours, reference) > 40


def test_each_image_gets_its_own_quality(kodak_crops: Tensor) -> None:
    quality = torch.tensor([40.0, 95.0, 60.0, 80.0])
    batched = jpeg_roundtrip(kodak_crops, quality)
    alone = torch.cat(
        [jpeg_roundtrip(kodak_crops[i : i + 1], quality[i : i + 1]) for i in range(4)]
    )
    # Same 8-bit result; a float rounding tie may flip a value by one level.
    assert (batched - alone).abs().max() <= 1 / 255 + 1e-6
    assert (batched != alone).float().mean() < 1e-3
    assert psnr_db(batched[0], kodak_crops[0]) < psnr_db(batched[1], kodak_crops[1]) - 5


def test_output_is_8_bit_in_range_and_keeps_odd_sizes() -> None:
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = jpeg_roundtrip(x, torch.tensor([30.0, 90.0]))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-6)


def test_quality_follows_libjpeg_scaling() -> None:
    luma, chroma = quantization_tables(torch.tensor([50.0, 100.0, 10.0, 74.6]))
    assert luma[0, 0] == 16 and chroma[0, -1] == 99  # quality 50: the tables themselves
    assert (luma[1] == 1).all() and (chroma[1] == 1).all()  # 100: every step 1
    assert luma[2, 0] == 80 and luma[2].max() == 255  # 10: x5, clamped for baseline
    assert luma[3, 0] == 8  # rounded to quality 75: x0.5


def test_wrong_quality_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="one quality per image"):
        jpeg_roundtrip(torch.rand(2, 3, 16, 16), torch.tensor(75.0))
