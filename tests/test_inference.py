"""The inference product: crop, tiles, paste-back, formats, export, folders, the example."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import changed_pixels, distance_to_mask, square_mask_image, write_pixels
from PIL import Image as PILImage
from safetensors.torch import load_file

from pixperfect.cli import main
from pixperfect.imageio import Image, read_image
from pixperfect.inference import Refiner, binarize_mask
from pixperfect.inference.crop import paste_weights
from pixperfect.models import build_refiner

ROOT = Path(__file__).resolve().parents[1]


def _model(seed: int = 0) -> torch.nn.Module:
    """A tiny U-Net (stride 4) whose head is loud enough that every refined pixel changes."""
    torch.manual_seed(seed)
    model = build_refiner("unet", base_channels=8, depth=2)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    torch.nn.init.normal_(model.head.bias, std=0.05)
    return model


class Recording(torch.nn.Module):
    """Wraps a model and records the (H, W) of every input it is called on."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.stride, self.calls = model, model.stride, []

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[-2:]))
        return self.model(x, m)


def _far_from(mask: np.ndarray, distance: float) -> np.ndarray:
    import cv2

    d = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return d >= distance


def test_refining_touches_only_the_mask_and_its_band_and_runs_on_a_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 240, 3), dtype=np.uint8)
    mask = square_mask_image(256, 240, 100, 90, 40)
    model = Recording(_model())
    refiner = Refiner(model, margin=32, band=8, feather=4)
    out = refiner(image, mask)
    assert out.shape == image.shape and out.dtype == image.dtype
    far = _far_from(mask, 8 + 4)
    assert np.array_equal(out[far], image[far]), "pixels beyond band + feather are the input's"
    assert (out[mask > 0] != image[mask > 0]).any(axis=-1).mean() > 0.9
    # The network saw the mask's box plus the margin (rounded to the stride), not the photo.
    assert model.calls == [(104, 104)]


def test_tiles_are_used_and_blend_to_the_untiled_result():
    torch.manual_seed(1)
    image = torch.rand(3, 300, 300)
    mask = torch.zeros(1, 300, 300)
    mask[:, 60:240, 50:250] = 1  # the crop, with its margin, is the whole 300 px image
    model = Recording(_model())
    whole = Refiner(model, paste="crop", tile_size=1024)(image, mask)
    assert model.calls == [(300, 300)]
    model.calls.clear()
    tiled = Refiner(model, paste="crop", tile_size=128, tile_overlap=48)(image, mask)
    assert len(model.calls) == 16 and all(c == (112, 112) for c in model.calls)  # 4 x 4
    correction = (whole - image).abs().mean()
    assert correction > 1e-2, "the test model must change the image noticeably"
    assert (tiled - whole).abs().max() < 1e-3
    assert (tiled - whole).abs().mean() < 1e-5


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((64, 80, 3), np.uint16),
        ((64, 80), np.uint16),
        ((64, 80, 4), np.uint8),
        ((64, 80, 4), np.uint16),
    ],
    ids=["rgb-16bit", "grey-16bit", "rgba-8bit", "rgba-16bit"],
)
def test_16_bit_and_rgba_arrays_keep_mode_depth_and_alpha(shape, dtype):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    mask = square_mask_image(64, 80, 20, 30, 16)
    out = Refiner(_model(), margin=24, band=8, feather=4)(Image(pixels), mask).pixels
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    if len(shape) == 3 and shape[2] == 4:
        assert np.array_equal(out[..., 3], pixels[..., 3]), "alpha is carried over untouched"
    far = _far_from(mask, 12)
    assert np.array_equal(out[far], pixels[far])
    assert not np.array_equal(out[mask > 0], pixels[mask > 0])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16"])
def test_pil_images_come_back_in_their_mode(mode):
    rng = np.random.default_rng(3)
    if mode == "I;16":
        image = PILImage.fromarray(rng.integers(0, 65535, (48, 56), dtype=np.uint16))
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = rng.integers(0, 255, (48, 56, channels), dtype=np.uint8)
        image = PILImage.fromarray(pixels[..., 0] if channels == 1 else pixels)
    assert image.mode == mode
    mask = PILImage.fromarray(square_mask_image(48, 56, 10, 10, 20))
    out = Refiner(_model(), margin=24, band=8, feather=4)(image, mask)
    assert out.mode == mode and out.size == image.size
    if mode == "RGBA":
        assert np.array_equal(np.asarray(out)[..., 3], np.asarray(image)[..., 3])


def test_an_empty_mask_returns_the_input_unchanged_with_a_warning():
    image = np.random.default_rng(4).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    grey_below_half = np.full((40, 50), 127, np.uint8)  # under the 0.5 threshold: not edited
    with pytest.warns(UserWarning, match="mask is empty"):
        out = Refiner(_model())(image, grey_below_half)
    assert np.array_equal(out, image)
    tensor = torch.rand(3, 40, 50)
    with pytest.warns(UserWarning, match="mask is empty"):
        assert torch.equal(Refiner(_model())(tensor, torch.zeros(1, 40, 50)), tensor)


def test_a_mask_of_another_size_is_refused_naming_both_sizes():
    image = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(ValueError, match=r"mask is 50x40 but the image is 60x40"):
        Refiner(_model())(image, square_mask_image(40, 50, 5, 5, 10))


def test_grey_level_masks_are_binarised_at_half_of_full_scale():
    assert binarize_mask(np.array([[127, 128]], np.uint8)).tolist() == [[False, True]]
    assert binarize_mask(np.array([[32767, 32768]], np.uint16)).tolist() == [[False, True]]
    rgb = np.array([[[255, 255, 0], [255, 0, 0]]], np.uint8)  # means 170 and 85
    assert binarize_mask(rgb).tolist() == [[True, False]]
    assert binarize_mask(torch.tensor([[[0.49, 0.5]]])).tolist() == [[False, True]]


def test_paste_weights_are_one_in_the_band_and_fall_smoothly_to_zero():
    mask = np.zeros((1, 60), bool)
    mask[0, :10] = True
    w = paste_weights(mask, band=5, feather=10)[0]
    assert (w[:15] == 1).all() and (w[25:] == 0).all()
    assert (np.diff(w[14:26]) <= 0).all() and 0 < w[20] < 1


def test_pooling_is_deterministic_and_off_at_one():
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:40, 20:40] = 1
    model = _model()
    plain = Refiner(model)(image, mask)
    pooled = Refiner(model, pooling=3)(image, mask)
    assert torch.allclose(pooled, Refiner(model, pooling=3)(image, mask), atol=1e-6)  # seeded
    assert not torch.equal(pooled, plain) and (pooled - plain).abs().max() < 0.05
    selected = Refiner(model, pooling=3, pooling_mode="select")(image, mask)
    assert selected.shape == image.shape


def test_a_folder_run_goes_on_past_bad_files_reports_them_and_exits_non_zero(
    trained_checkpoint, tmp_path, capsys
):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    rng = np.random.default_rng(6)
    for name in ("a", "b"):
        write_pixels(images / f"{name}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    write_pixels(masks / "a.png", square_mask_image(48, 64, 10, 10, 16))
    # the _mask convention
    write_pixels(masks / "b_mask.png", square_mask_image(48, 64, 20, 20, 16))
    write_pixels(images / "nomask.png", np.zeros((48, 64, 3), np.uint8))
    write_pixels(images / "wrongsize.png", np.zeros((48, 64, 3), np.uint8))
    write_pixels(masks / "wrongsize.png", square_mask_image(40, 64, 10, 10, 16))
    (images / "notes.txt").write_text("not an image")
    write_pixels(masks / "notes.png", square_mask_image(48, 64, 10, 10, 16))
    code = main(
        ["refine", "--ckpt", str(trained_checkpoint), "--images", str(images),
         "--masks", str(masks), "--out", str(out)]
    )  # fmt: skip
    report = capsys.readouterr().out
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "refined 2 of 5" in report
    assert "nomask.png: no mask" in report
    assert "wrongsize.png: mask" in report and "64x40" in report and "64x48" in report
    assert "notes.txt:" in report and "not a readable image" in report


@pytest.mark.parametrize("raw", [False, True], ids=["ema", "raw"])
def test_export_then_from_pretrained_matches_from_checkpoint(trained_checkpoint, tmp_path, raw):
    # A checkpoint with everything training keeps: a discriminator and optimiser states too.
    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    assert any(k.startswith("generator_ema.") for k in ckpt["state_dict"])
    ckpt["state_dict"]["discriminator.head.weight"] = torch.zeros(1, 8, 3, 3)
    full = tmp_path / "full.ckpt"
    torch.save(ckpt, full)
    folder = tmp_path / "export"
    assert main(["export", str(full), str(folder), *(["--raw"] if raw else [])]) == 0

    tensors = load_file(str(folder / "model.safetensors"))
    assert not any("discriminator" in k or k.startswith("generator") for k in tensors)
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["weights"] == ("raw" if raw else "ema")
    assert provenance["global_step"] == ckpt["global_step"] == 2
    assert provenance["source_checkpoint"] == str(full.resolve())

    image = torch.rand(3, 64, 72, generator=torch.Generator().manual_seed(7))
    mask = torch.zeros(1, 64, 72)
    mask[:, 16:40, 20:50] = 1
    exported = Refiner.from_pretrained(folder)
    assert exported.weights == provenance["weights"]
    assert Refiner.from_checkpoint(full).weights == "ema", "from_checkpoint takes the EMA"
    same = Refiner.from_checkpoint(full, ema=not raw)
    for (name, a), (_, b) in zip(
        exported.model.state_dict().items(), same.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # Same weights; CPU convolutions are not always bit-reproducible between calls.
    assert torch.allclose(exported(image, mask), same(image, mask), atol=1e-6, rtol=0)
    other = Refiner.from_checkpoint(full, ema=raw)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            exported.model.state_dict().values(), other.model.state_dict().values(), strict=True
        )
    ), "EMA and raw weights differ, so the test tells them apart"


def test_refine_accepts_an_exported_model_folder(trained_checkpoint, tmp_path):
    folder = tmp_path / "export"
    assert main(["export", str(trained_checkpoint), str(folder)]) == 0
    pixels = np.random.default_rng(8).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    image, mask = write_pixels(tmp_path / "in.png", pixels), tmp_path / "m.png"
    write_pixels(mask, square_mask_image(40, 52, 8, 8, 12))
    args = ["refine", "--model", str(folder), "--image", str(image), "--mask", str(mask)]
    assert main([*args, "--out", str(tmp_path / "out.png"), "--band", "4", "--feather", "2"]) == 0
    assert read_image(tmp_path / "out.png").pixels.shape == pixels.shape


def test_from_pretrained_on_a_bad_folder_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors.*pixperfect export"):
        Refiner.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no config\.yaml.*pixperfect export"):
        Refiner.from_pretrained(tmp_path)


def test_the_diffusers_example_refines_a_synthetic_pipeline_output():
    spec = importlib.util.spec_from_file_location(
        "diffusers_inpaint", ROOT / "examples" / "diffusers_inpaint.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rng = np.random.default_rng(9)
    photo = PILImage.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    generated = PILImage.fromarray(rng.integers(0, 255, (64, 88, 3), dtype=np.uint8))  # /8
    mask = PILImage.fromarray(square_mask_image(70, 90, 20, 30, 24))
    refiner = Refiner(_model(), margin=24, band=8, feather=4)

    out = example.refine_pipeline_output(generated, mask, refiner, original=photo)
    assert out.mode == "RGB" and out.size == photo.size
    far = _far_from(np.asarray(mask), 12)
    assert np.array_equal(np.asarray(out)[far], np.asarray(photo)[far]), "photo pasted back"

    alone = example.refine_pipeline_output(generated, mask, refiner)
    assert alone.size == generated.size


def test_tiles_cover_every_length_with_the_requested_overlap_on_the_stride_grid():
    from pixperfect.inference.tiling import tile_length, tile_starts

    for length in range(8, 700, 4):
        side = tile_length(length, 128, 32, stride=4)
        starts = tile_starts(length, side, 32, stride=4)
        assert side <= 128 and side % 4 == 0 and all(s % 4 == 0 for s in starts)
        assert starts[0] == 0 and starts[-1] + side == length
        assert all(b - a <= side - 32 for a, b in zip(starts, starts[1:], strict=False))
    assert tile_length(1424, 1024, 128, stride=8) == 776  # two balanced tiles, not 2 x 1024


# -- what refine may change: the mask and a few px around it, nothing else by default --------

DEFAULT_REACH = 3  # px past the mask that a default refine may change (spill + band + feather)


def _disk_and_box(h: int = 64, w: int = 80) -> np.ndarray:
    """A round edit (diagonal distances) and a rectangular one, 255 = edited."""
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - 24) ** 2 + (xx - 28) ** 2 <= 9**2
    mask[44:54, 52:66] = True
    return mask.astype(np.uint8) * 255


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tile_size": 32, "tile_overlap": 8},
        {"pooling": 3},
        {"pooling": 3, "pooling_mode": "select", "tile_size": 32, "tile_overlap": 8},
    ],
    ids=["plain", "tiled", "pooled", "tiled-pooled-select"],
)
@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((64, 80, 3), np.uint8),
        ((64, 80, 3), np.uint16),
        ((64, 80, 4), np.uint8),
        ((64, 80, 4), np.uint16),
        ((64, 80), np.uint8),
        ((64, 80), np.uint16),
    ],
    ids=["rgb-8bit", "rgb-16bit", "rgba-8bit", "rgba-16bit", "grey-8bit", "grey-16bit"],
)
def test_by_default_refine_changes_only_the_mask_and_3_px_around_it(shape, dtype, options):
    pixels = np.random.default_rng(10).integers(0, np.iinfo(dtype).max, shape, dtype, True)
    mask = _disk_and_box()
    refiner = Refiner(_model(), **options)
    assert refiner.reach == DEFAULT_REACH
    out = refiner(pixels, mask)
    distance = distance_to_mask(mask)
    far = distance > DEFAULT_REACH
    assert np.array_equal(out[far], pixels[far]), "the photo outside the edit is untouched"
    changed = changed_pixels(out, pixels)
    assert changed[mask > 0].mean() > 0.9, "the edit itself is refined"
    assert changed[(distance > 0) & (distance <= DEFAULT_REACH)].any(), "and its seam band"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensors_keep_their_exact_values_beyond_the_default_band(dtype):
    image = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(11), dtype=dtype)
    mask_np = _disk_and_box()
    mask = torch.from_numpy(mask_np > 0).float()[None, None].expand(2, 1, -1, -1)
    out = Refiner(_model())(image, mask)
    assert out.dtype == dtype
    far = torch.from_numpy(distance_to_mask(mask_np) > DEFAULT_REACH)
    assert torch.equal(out[..., far], image[..., far]), "no float32 round trip out there"
    inside = torch.from_numpy(mask_np > 0)
    assert (out[..., inside] != image[..., inside]).float().mean() > 0.9


def test_a_32_bit_pil_image_keeps_out_of_range_pixels_beyond_the_band():
    rng = np.random.default_rng(12)
    pixels = rng.integers(0, 65535, (64, 80), dtype=np.int32)
    pixels[0, :4] = [-5, 70000, 2**20, 65536]  # far from the edit, outside 16 bits
    image = PILImage.fromarray(pixels)
    assert image.mode == "I"
    mask = _disk_and_box()
    out = Refiner(_model())(image, PILImage.fromarray(mask))
    assert out.mode == "I"
    result, far = np.asarray(out), distance_to_mask(mask) > DEFAULT_REACH
    assert np.array_equal(result[far], pixels[far])
    assert (result[mask > 0] != pixels[mask > 0]).mean() > 0.9


def test_spill_widens_what_refine_changes_by_that_many_px():
    pixels = np.random.default_rng(13).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    mask, model = _disk_and_box(), _model()
    refiner = Refiner(model, spill=6)
    assert refiner.reach == 6 + DEFAULT_REACH
    out = refiner(pixels, mask)
    distance, changed = distance_to_mask(mask), changed_pixels(out, pixels)
    assert np.array_equal(out[distance > 9], pixels[distance > 9])
    assert changed[(distance > DEFAULT_REACH) & (distance <= 9)].mean() > 0.5, "band grew"
    # The spilled pixels are refined at full weight, like a band 6 px wider (two runs of
    # the same network: CPU convolutions may differ in the last bit, so 1 level apart).
    wider = Refiner(model, band=6 + 2)(pixels, mask)
    assert np.abs(out.astype(int) - wider).max() <= 1


def test_a_wider_band_and_feather_change_pixels_that_far_and_no_farther():
    pixels = np.random.default_rng(14).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    mask = _disk_and_box()
    refiner = Refiner(_model(), band=8, feather=4)
    assert refiner.reach == 12
    out = refiner(pixels, mask)
    distance, changed = distance_to_mask(mask), changed_pixels(out, pixels)
    assert np.array_equal(out[distance >= 12], pixels[distance >= 12])
    assert changed[(distance > DEFAULT_REACH) & (distance < 12)].mean() > 0.5
    assert Refiner(_model(), paste="crop").reach is None  # the whole crop: no such bound


def test_a_reach_past_the_margin_is_refused():
    with pytest.raises(ValueError, match=r"spill \+ band \+ feather = 19"):
        Refiner(_model(), margin=16, spill=16)
    with pytest.raises(ValueError, match="spill=-1"):
        Refiner(_model(), spill=-1)
