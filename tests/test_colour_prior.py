"""The colour prior: ring colour transfer, refiners built on it, and tiled inference."""

from __future__ import annotations

import pytest
import torch

from pixperfect.config import ConfigError, load_config
from pixperfect.evaluation.baselines import BASELINES, reinhard_transfer
from pixperfect.inference import Refiner
from pixperfect.models import build_refiner
from pixperfect.models.colour_prior import ring_colour_transfer, seam_affine_transfer


def _two_tone(batch: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat colour outside a box, another flat colour inside it."""
    image = torch.empty(batch, 3, size, size)
    image[:] = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1)
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, 16:48, 20:44] = 1
    image = torch.where(mask > 0.5, torch.tensor([0.6, 0.3, 0.2]).view(1, 3, 1, 1), image)
    return image, mask


def test_a_flat_shifted_edit_takes_the_colour_of_its_surroundings():
    image, mask = _two_tone()
    out = ring_colour_transfer(image, mask)
    inside = mask.expand_as(out) > 0.5
    expected = torch.tensor([0.2, 0.5, 0.7]).view(3, 1)
    assert torch.allclose(out.permute(1, 0, 2, 3)[:, inside[:, 0]], expected, atol=2e-3)
    assert torch.equal(out[~inside], image[~inside]), "pixels outside the mask are untouched"


def test_empty_and_full_masks_leave_the_image_unchanged():
    image, _ = _two_tone(batch=1)
    for fill in (0.0, 1.0):
        mask = torch.full((1, 1, 64, 64), fill)
        assert torch.equal(ring_colour_transfer(image, mask), image)


def test_each_image_of_a_batch_uses_its_own_statistics():
    image, mask = _two_tone(batch=2)
    image[1] = image[1] * 0.5  # a darker second photo: its edit must move to its own ring
    together = ring_colour_transfer(image, mask)
    alone = torch.cat([ring_colour_transfer(image[i : i + 1], mask[i : i + 1]) for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-6)
    assert (together[0] - together[1]).abs().max() > 0.05


def test_the_reinhard_baseline_is_the_colour_prior():
    torch.manual_seed(0)
    image, mask = torch.rand(2, 3, 48, 48), torch.zeros(2, 1, 48, 48)
    mask[:, :, 10:30, 12:40] = 1
    assert torch.equal(reinhard_transfer(image, mask), ring_colour_transfer(image, mask))


def _gated(name: str, gate_logit: float | None) -> torch.nn.Module:
    """A refiner with a zero correction head and its prior gate held at ``gate_logit``."""
    torch.manual_seed(0)
    kwargs = {"base_channels": 8, "depth": 2, "colour_prior": "reinhard"}
    if name == "ffc":
        kwargs["ffc_blocks"] = 1
    model = build_refiner(name, **kwargs)
    torch.nn.init.zeros_(model.head.weight)
    if gate_logit is not None:
        torch.nn.init.zeros_(model.gate.conv.weight)
        torch.nn.init.constant_(model.gate.conv.bias, gate_logit)
    return model


@pytest.mark.parametrize("name", ["unet", "ffc"])
def test_the_gate_chooses_per_pixel_between_the_prior_and_the_composite(name):
    image, mask = _two_tone()
    prior = ring_colour_transfer(image, mask)
    assert (prior - image).abs().max() > 0.1, "the prior moves the edit"
    with torch.no_grad():
        opened = _gated(name, 30.0)(image, mask)  # sigmoid(30) == 1 in float32
        closed = _gated(name, -30.0)(image, mask)
    torch.testing.assert_close(opened, prior, atol=1e-6, rtol=0)
    # Closed: the composite within quantisation, where the prior would have moved it.
    assert (closed - image).abs().max() < 0.5 / 255
    model = _gated(name, None)
    assert model.stem[0].in_channels == 7, "the network sees composite, mask and prior"
    assert 0.9 < torch.sigmoid(model.gate.conv.bias).item() < 1, "it starts near the prior"


def test_without_the_gate_the_prior_is_a_fixed_start():
    torch.manual_seed(0)
    model = build_refiner(
        "unet", base_channels=8, depth=2, colour_prior="reinhard", prior_gate=False
    )
    torch.nn.init.zeros_(model.head.weight)
    image, mask = _two_tone()
    assert model.gate is None
    with torch.no_grad():
        assert torch.equal(model(image, mask), ring_colour_transfer(image, mask))


def test_tiled_inference_takes_the_prior_from_the_whole_crop():
    """A tile deep inside a large edit has no surroundings of its own: the prior must come
    from the crop, so tiled and untiled refinement agree."""
    torch.manual_seed(0)
    model = _gated("unet", 30.0)
    image = torch.rand(3, 300, 300) * 0.2 + 0.4
    mask = torch.zeros(1, 300, 300)
    mask[:, 40:260, 40:260] = 1
    image[:, 40:260, 40:260] += 0.2  # the edit is brighter than its surroundings
    whole = Refiner(model, paste="crop", tile_size=1024)(image, mask)
    tiled = Refiner(model, paste="crop", tile_size=128, tile_overlap=32)(image, mask)
    assert (whole - image).abs()[:, 150, 150].min() > 0.1, "the prior corrected the edit"
    assert (tiled - whole).abs().max() < 1e-5


def test_an_unknown_colour_prior_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="model.colour_prior"):
        load_config(None, ["model.colour_prior=histogram"])


def _smooth_photo(batch: int = 2, size: int = 96) -> torch.Tensor:
    """Smooth colour gradients: a photo whose content continues across any seam."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([0.3 + 0.4 * xx, 0.6 - 0.3 * yy, 0.4 + 0.2 * xx * yy])
    return base.expand(batch, 3, size, size).clone()


def _box(batch: int = 2, size: int = 96) -> torch.Tensor:
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, 24:72, 20:76] = 1
    return mask


def _rgb_error(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> float:
    return float((a - b).abs().mean(1, keepdim=True)[region].mean())


def test_the_seam_affine_prior_undoes_an_affine_colour_shift_of_the_edit():
    photo, mask = _smooth_photo(), _box()
    inside = mask > 0.5
    shift = torch.tensor([[1.1, 0.05, 0.0], [0.0, 0.9, 0.05], [0.05, 0.0, 1.05]])
    shifted = (torch.einsum("ij,bjhw->bihw", shift, photo) + 0.04).clamp(0, 1)
    composite = torch.where(inside, shifted, photo)
    out = seam_affine_transfer(composite, mask)
    before, after = _rgb_error(composite, photo, inside), _rgb_error(out, photo, inside)
    assert after < 0.25 * before, (before, after)
    assert torch.equal(out[~inside.expand_as(out)], composite[~inside.expand_as(out)])


def test_the_seam_affine_prior_leaves_an_edit_without_a_colour_shift_almost_alone():
    photo, mask = _smooth_photo(), _box()
    out = seam_affine_transfer(photo, mask)
    assert (out - photo).abs().max() < 2 / 255


def test_the_seam_affine_prior_pairs_like_with_like_where_reinhard_mixes_contents():
    """Sky above a roof line, an unshifted edit across the line: the two rings hold sky and
    roof in other proportions, so Reinhard moves the edit; the seam pairs sky with sky and
    roof with roof, and the fit barely moves it."""
    image = torch.empty(1, 3, 96, 96)
    image[:] = torch.tensor([0.55, 0.7, 0.9]).view(1, 3, 1, 1)  # sky
    image[..., 62:, :] = torch.tensor([0.35, 0.2, 0.15]).view(1, 3, 1, 1)  # roof
    mask = torch.zeros(1, 1, 96, 96)
    mask[..., 20:70, 24:72] = 1
    inside = mask > 0.5
    reinhard = _rgb_error(ring_colour_transfer(image, mask), image, inside)
    seam = _rgb_error(seam_affine_transfer(image, mask), image, inside)
    assert reinhard > 0.015 and seam < 0.2 * reinhard, (reinhard, seam)


def test_the_seam_affine_prior_is_per_image_and_passes_empty_and_full_masks():
    photo, mask = _smooth_photo(), _box()
    composite = torch.where(mask > 0.5, photo * 0.8, photo)
    composite[1] = torch.where(mask[1] > 0.5, photo[1] * 1.2, photo[1]).clamp(0, 1)
    together = seam_affine_transfer(composite, mask)
    alone = torch.cat([seam_affine_transfer(composite[i : i + 1], mask[i : i + 1]) for i in (0, 1)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    for fill in (0.0, 1.0):
        assert torch.equal(seam_affine_transfer(photo, torch.full_like(mask, fill)), photo)


def test_the_seam_affine_baseline_is_the_colour_prior_of_that_name():
    photo, mask = _smooth_photo(), _box()
    composite = torch.where(mask > 0.5, photo * 0.8, photo)
    assert torch.equal(
        BASELINES["seam_affine"](composite, mask), seam_affine_transfer(composite, mask)
    )
    model = build_refiner("unet", base_channels=8, depth=2, colour_prior="seam_affine")
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.gate.conv.weight)
    torch.nn.init.constant_(model.gate.conv.bias, 30.0)
    with torch.no_grad():
        torch.testing.assert_close(
            model(composite, mask), seam_affine_transfer(composite, mask), atol=1e-6, rtol=0
        )


def test_the_colour_head_starts_as_a_no_op_and_moves_only_the_edit():
    photo, mask = _smooth_photo(), _box()
    composite = torch.where(mask > 0.5, photo * 0.8, photo)
    torch.manual_seed(0)
    plain = build_refiner("unet", base_channels=8, depth=2, colour_prior="seam_affine")
    torch.manual_seed(0)
    headed = build_refiner(
        "unet", base_channels=8, depth=2, colour_prior="seam_affine", colour_head=True
    )
    with torch.no_grad():
        torch.testing.assert_close(headed(composite, mask), plain(composite, mask))
        torch.nn.init.constant_(headed.colour.mlp[-1].bias, 0.0)
        headed.colour.mlp[-1].bias[9:] = 0.1  # offset row of the 4x3 map: +0.1 everywhere
        moved = headed(composite, mask) - plain(composite, mask)
    inside = (mask > 0.5).expand_as(moved)
    torch.testing.assert_close(moved[inside], torch.full_like(moved[inside], 0.1))
    assert torch.equal(moved[~inside], torch.zeros_like(moved[~inside]))
