import numpy as np
import pytest
import torch
from helpers import changed_pixels, distance_to_mask, write_pixels

from pixperfect.cli import main
from pixperfect.imageio import read_image
from pixperfect.inference import Refiner, pad_to_multiple
from pixperfect.models.colour_prior import apply_colour_prior


def _mask(h, w):
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 255
    return m


DEFAULT_REACH = 3  # px past the mask that a default refine may change


@pytest.fixture
def loud_refiner(monkeypatch):
    """``Refiner.from_checkpoint`` (what ``refine --ckpt`` loads) with a head loud enough
    that every refined pixel changes: two training steps barely move the 8-bit values."""
    load = Refiner.from_checkpoint.__func__

    def loud(cls, *args, **kwargs):
        refiner = load(cls, *args, **kwargs)
        torch.manual_seed(0)
        torch.nn.init.normal_(refiner.model.head.weight, std=0.1)
        torch.nn.init.normal_(refiner.model.head.bias, std=0.05)
        return refiner

    monkeypatch.setattr(Refiner, "from_checkpoint", classmethod(loud))


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((37, 53, 3), np.uint8),
        ((41, 29), np.uint8),
        ((33, 47, 4), np.uint8),
        ((35, 50, 3), np.uint16),
        ((30, 31), np.uint16),
    ],
    ids=["rgb-odd", "grey", "rgba", "rgb-16bit", "grey-16bit"],
)
def test_refine_keeps_size_mode_and_bit_depth(trained_checkpoint, tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    image = write_pixels(tmp_path / "in.png", pixels)
    mask = write_pixels(tmp_path / "mask.png", _mask(*shape[:2]))
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "refine",
                "--ckpt",
                str(trained_checkpoint),
                "--image",
                str(image),
                "--mask",
                str(mask),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = read_image(out).pixels
    assert result.shape == pixels.shape and result.dtype == pixels.dtype
    if shape[-1:] == (4,):
        assert np.array_equal(result[..., 3], pixels[..., 3]), "alpha is carried over"
    far = distance_to_mask(_mask(*shape[:2])) > DEFAULT_REACH
    assert np.array_equal(result[far], pixels[far]), "the photo outside the edit is untouched"


def test_untrained_refiner_is_its_starting_point_through_padding(trained_checkpoint):
    """With a zero head (and the prior gate open) the refiner returns what it starts from:
    the composite, or the colour prior's image when the config sets one (the demo does),
    padding or not."""
    refiner = Refiner.from_checkpoint(trained_checkpoint)
    torch.nn.init.zeros_(refiner.model.head.weight)
    torch.nn.init.zeros_(refiner.model.head.bias)
    if refiner.model.gate is not None:  # the prior gate wide open: the start is the prior
        torch.nn.init.zeros_(refiner.model.gate.conv.weight)
        torch.nn.init.constant_(refiner.model.gate.conv.bias, 30.0)
    image = torch.rand(3, 37, 53)
    mask = torch.zeros(1, 37, 53)
    mask[:, 10:20, 5:30] = 1
    start = apply_colour_prior(refiner.model.colour_prior, image[None], mask[None])[0]
    assert torch.allclose(refiner(image, mask), start, atol=1e-5, rtol=0)
    assert torch.allclose(refiner.network(image, mask), start, atol=1e-5, rtol=0)


def test_a_mask_of_another_size_is_refused_naming_both_sizes(trained_checkpoint, tmp_path, capsys):
    image = write_pixels(tmp_path / "in.png", np.zeros((40, 60, 3), np.uint8))
    mask = write_pixels(tmp_path / "mask.png", _mask(40, 50))
    code = main(
        [
            "refine",
            "--ckpt",
            str(trained_checkpoint),
            "--image",
            str(image),
            "--mask",
            str(mask),
            "--out",
            str(tmp_path / "out.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "50x40" in err and "60x40" in err


def test_a_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="pixperfect train"):
        Refiner.from_checkpoint(tmp_path / "nope.ckpt")


def test_padding_reaches_the_stride_and_keeps_the_original_size():
    x, (h, w) = pad_to_multiple(torch.rand(1, 3, 37, 53), 8)
    assert x.shape[-2:] == (40, 56) and (h, w) == (37, 53)
    tiny, _ = pad_to_multiple(torch.rand(1, 3, 3, 5), 8)
    assert tiny.shape[-2:] == (8, 8)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("unet", {"base_channels": 8, "depth": 2}),
        ("ffc", {"base_channels": 4, "depth": 2, "ffc_blocks": 1}),
    ],
)
def test_edit_margin_keeps_the_background_exact(name, kwargs):
    from pixperfect.models import build_refiner

    model = build_refiner(name, **kwargs, edit_margin=3)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    torch.nn.init.normal_(model.head.bias, std=0.1)
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[..., 12:20, 12:20] = 1
    out = model(image, mask)
    far = torch.ones(32, 32, dtype=torch.bool)
    far[9:23, 9:23] = False  # the mask grown by the 3 px margin
    assert torch.equal(out[..., far], image[..., far])
    assert not torch.equal(out[..., 9:23, 9:23], image[..., 9:23, 9:23])


def test_refine_changes_the_edit_and_3_px_around_it_and_spill_widens_that(
    trained_checkpoint, loud_refiner, tmp_path
):
    pixels = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image = write_pixels(tmp_path / "in.png", pixels)
    mask = _mask(48, 64)
    mask[30:36, 40:44] = 255  # a second, separate edit
    write_pixels(tmp_path / "mask.png", mask)
    distance = distance_to_mask(mask)
    args = ["refine", "--ckpt", str(trained_checkpoint), "--image", str(image)]
    args += ["--mask", str(tmp_path / "mask.png")]

    assert main([*args, "--out", str(tmp_path / "default.png")]) == 0
    out = read_image(tmp_path / "default.png").pixels
    far = distance > DEFAULT_REACH
    assert np.array_equal(out[far], pixels[far]), "the photo outside the edit is untouched"
    assert changed_pixels(out, pixels)[mask > 0].mean() > 0.9, "the edit is refined"

    assert main([*args, "--out", str(tmp_path / "spill.png"), "--spill", "5"]) == 0
    spilled = read_image(tmp_path / "spill.png").pixels
    reach = 5 + DEFAULT_REACH
    assert np.array_equal(spilled[distance > reach], pixels[distance > reach])
    grown = (distance > DEFAULT_REACH) & (distance <= reach)
    assert changed_pixels(spilled, pixels)[grown].mean() > 0.5, "--spill 5 refines 5 px more"


def test_a_folder_run_changes_only_each_edit_and_3_px_around_it(
    trained_checkpoint, loud_refiner, tmp_path
):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    rng = np.random.default_rng(2)
    inputs = {
        "a.png": rng.integers(0, 255, (40, 56, 3), dtype=np.uint8),
        "b.png": rng.integers(0, 65535, (44, 36), dtype=np.uint16),
    }
    for name, pixels in inputs.items():
        write_pixels(images / name, pixels)
        write_pixels(masks / name, _mask(*pixels.shape[:2]))
    code = main(
        ["refine", "--ckpt", str(trained_checkpoint), "--images", str(images),
         "--masks", str(masks), "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    for name, pixels in inputs.items():
        result, mask = read_image(out / name).pixels, _mask(*pixels.shape[:2])
        far = distance_to_mask(mask) > DEFAULT_REACH
        assert np.array_equal(result[far], pixels[far]), name
        assert changed_pixels(result, pixels)[mask > 0].mean() > 0.9, name


def _photo_jpeg(path, shape=(96, 128)):
    """A real photo (scikit-image's astronaut) saved as an ordinary JPEG (quality 90)."""
    import cv2
    from skimage import data

    pixels = cv2.resize(data.astronaut(), shape[::-1], interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return read_image(path).pixels  # as decoded: what the refiner is given


def test_a_jpeg_output_says_it_reencodes_and_loses_the_least_it_can(
    trained_checkpoint, tmp_path, capsys
):
    pixels = _photo_jpeg(tmp_path / "photo.jpg")
    mask = write_pixels(tmp_path / "mask.png", _mask(96, 128))
    args = ["refine", "--ckpt", str(trained_checkpoint), "--image", str(tmp_path / "photo.jpg")]
    assert main([*args, "--mask", str(mask), "--out", str(tmp_path / "out.jpg")]) == 0
    assert "re-encodes the whole image" in capsys.readouterr().err
    far = distance_to_mask(_mask(96, 128)) > DEFAULT_REACH
    change = np.abs(read_image(tmp_path / "out.jpg").pixels.astype(int) - pixels)[far]
    # Quality 100 without chroma subsampling. Measured on this photo: OpenCV's default
    # (95, 4:2:0) changed these pixels by up to 18 levels, this by up to 3.
    assert change.max() <= 6, change.max()


def test_lossless_outputs_keep_the_photo_byte_for_byte_png_for_a_jpeg_folder_and_webp(
    trained_checkpoint, tmp_path, capsys
):
    (tmp_path / "edits").mkdir()
    pixels = _photo_jpeg(tmp_path / "edits" / "photo.jpg")
    write_pixels(tmp_path / "edits" / "photo_mask.png", _mask(96, 128))
    write_pixels(tmp_path / "edits" / "plain.webp", pixels)
    write_pixels(tmp_path / "edits" / "plain_mask.png", _mask(96, 128))
    edits = str(tmp_path / "edits")
    args = ["refine", "--ckpt", str(trained_checkpoint), "--images", edits, "--masks", edits]
    assert main([*args, "--out", str(tmp_path / "png"), "--png"]) == 0
    assert main([*args, "--out", str(tmp_path / "same")]) == 0
    assert "1 output(s) are JPEG" in capsys.readouterr().out  # the second run's report
    far = distance_to_mask(_mask(96, 128)) > DEFAULT_REACH
    for out in ("png/photo.png", "png/plain.png", "same/plain.webp"):
        assert np.array_equal(read_image(tmp_path / out).pixels[far], pixels[far]), out


def test_png_outputs_that_would_collide_are_reported_not_overwritten(trained_checkpoint, tmp_path):
    (tmp_path / "edits").mkdir()
    for name in ("photo.jpg", "photo.png"):
        write_pixels(tmp_path / "edits" / name, np.full((32, 32, 3), 128, np.uint8))
    write_pixels(tmp_path / "edits" / "photo_mask.png", _mask(32, 32))
    edits = str(tmp_path / "edits")
    args = ["refine", "--ckpt", str(trained_checkpoint), "--images", edits, "--masks", edits]
    assert main([*args, "--out", str(tmp_path / "out"), "--png"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png"]
