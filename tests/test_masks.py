"""Edit masks (strokes, boxes, blobs, files, latent snapping) and compositing alphas."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.measure import label

from data_sim.masks import (
    MASK_KINDS,
    BoundaryConfig,
    MaskConfig,
    compositing_alpha,
    grow_masks,
    rasterize_masks,
    sample_boundary_params,
    sample_mask_params,
)

CPU = torch.device("cpu")


def only(kind: str, **kwargs) -> MaskConfig:
    weights = {f"{k}_weight": float(k == kind) for k in MASK_KINDS}
    return MaskConfig(**{**weights, "latent_grid_prob": 0.0, **kwargs})


def masks(cfg: MaskConfig, n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    params = sample_mask_params(n, h, w, cfg, torch.Generator().manual_seed(seed))
    return rasterize_masks(params, h, w, CPU, cfg.raster_size, mask_dir=cfg.mask_dir)


@pytest.fixture
def mask_dir(tmp_path):
    """Three tiny binary PNG masks of different sizes and value conventions."""
    a = np.zeros((9, 7), np.uint8)
    a[2:7, 1:5] = 255
    b = np.zeros((12, 12), np.uint8)
    b[3:, :6] = 1  # 0/1 masks are common too
    c = np.zeros((5, 11), np.uint8)
    c[1:4, 6:10] = 255
    for name, m in (("a.png", a), ("b.png", b), ("c.png", c)):
        Image.fromarray(m).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a mask, ignored")
    return tmp_path


@pytest.mark.parametrize("kind", ["stroke", "box", "blob", "file"])
def test_each_kind_alone_gives_non_empty_binary_masks(kind, mask_dir):
    cfg = only(kind, mask_dir=str(mask_dir) if kind == "file" else None)
    cfg.validate()
    m = masks(cfg, 8, 45, 61)
    assert m.shape == (8, 1, 45, 61) and m.dtype == torch.float32 and m.device == CPU
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert (m.flatten(1).sum(1) > 0).all()


def test_kind_weights_are_honoured_over_many_draws():
    cfg = MaskConfig(stroke_weight=0.5, box_weight=0.2, blob_weight=0.3, file_weight=0.0)
    kind = sample_mask_params(4000, 32, 32, cfg, torch.Generator().manual_seed(0))["kind"]
    freq = torch.bincount(kind, minlength=4).float() / len(kind)
    assert torch.allclose(freq, torch.tensor([0.5, 0.2, 0.3, 0.0]), atol=0.03)


def test_same_seed_gives_the_same_masks_and_another_seed_does_not():
    cfg = MaskConfig(latent_grid_prob=0.5)
    pa = sample_mask_params(8, 48, 40, cfg, torch.Generator().manual_seed(3))
    pb = sample_mask_params(8, 48, 40, cfg, torch.Generator().manual_seed(3))
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert torch.equal(masks(cfg, 8, 48, 40, seed=3), masks(cfg, 8, 48, 40, seed=3))
    assert not torch.equal(masks(cfg, 8, 48, 40, seed=3), masks(cfg, 8, 48, 40, seed=4))


def test_a_single_blob_is_one_smooth_piece():
    m = masks(only("blob", blob_count=(1, 1), blob_roughness=1.0), 24, 96, 128)
    for sample in m[:, 0].numpy():
        assert label(sample, connectivity=1).max() == 1
        # Smooth outline: its perimeter is close to that of a disc of the same area, far from
        # a ragged one (a disc scores ~1, these blobs up to ~1.4, speckle 10).
        perimeter = (sample != ndimage.binary_erosion(sample)).sum()
        assert perimeter < 2 * np.sqrt(4 * np.pi * sample.sum())


def test_latent_grid_snapping_makes_masks_constant_on_8x8_cells():
    h, w = 60, 44  # not multiples of the cell
    cfg = MaskConfig(latent_grid_prob=1.0, latent_cell=8)
    params = sample_mask_params(6, h, w, cfg, torch.Generator().manual_seed(1))
    snapped = rasterize_masks(params, h, w, CPU)
    drawn = rasterize_masks({**params, "latent_cell": torch.zeros(6, dtype=torch.long)}, h, w, CPU)
    assert (snapped >= drawn).all() and (snapped > drawn).any()  # every touched cell edited
    cells = torch.nn.functional.pad(snapped, (0, 4, 0, 4), mode="replicate")
    cells = cells.unfold(2, 8, 8).unfold(3, 8, 8)  # (B, 1, 8, 6, 8, 8)
    assert (cells.amax(dim=(-1, -2)) == cells.amin(dim=(-1, -2))).all()


def test_file_masks_load_resize_to_an_odd_size_and_use_every_file(mask_dir):
    cfg = only("file", mask_dir=str(mask_dir))
    params = sample_mask_params(64, 37, 29, cfg, torch.Generator().manual_seed(0))
    assert set(params["file_index"].tolist()) == {0, 1, 2}  # notes.txt is not a mask
    m = rasterize_masks(params, 37, 29, CPU, mask_dir=cfg.mask_dir)
    assert m.shape == (64, 1, 37, 29) and set(m.unique().tolist()) == {0.0, 1.0}
    # b.png fills its lower-left: flipped copies fill the lower-right instead.
    b = m[params["file_index"] == 1, 0]
    flipped = params["file_flip"][params["file_index"] == 1]
    assert flipped.any() and (~flipped).any()
    assert (b[~flipped][:, -1, 0] == 1).all() and (b[flipped][:, -1, -1] == 1).all()


@pytest.mark.parametrize("where", ["none", "missing", "empty"])
def test_file_masks_without_a_mask_folder_are_refused_naming_the_key(where, tmp_path):
    folder = {"none": None, "missing": str(tmp_path / "nope"), "empty": str(tmp_path)}[where]
    cfg = MaskConfig(file_weight=1.0, mask_dir=folder)
    with pytest.raises(ValueError, match=r"sim\.mask\.mask_dir.*file_weight"):
        cfg.validate()
    with pytest.raises(ValueError, match=r"sim\.mask\.mask_dir"):  # first use, unvalidated
        sample_mask_params(4, 32, 32, cfg, torch.Generator().manual_seed(0))


def test_unreadable_mask_files_are_skipped_with_a_warning(mask_dir):
    (mask_dir / "broken.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mask_dir / "blank.png")
    cfg = only("file", mask_dir=str(mask_dir))
    with pytest.warns(UserWarning, match=r"broken\.png.*blank\.png|blank\.png.*broken\.png"):
        params = sample_mask_params(32, 16, 16, cfg, torch.Generator().manual_seed(0))
    assert set(params["file_index"].tolist()) == {0, 1, 2}


def boundary(n: int, hard: bool, grow: float, sigma: float = 2.0) -> dict[str, torch.Tensor]:
    return {
        "hard": torch.full((n,), hard),
        "feather_sigma": torch.full((n,), sigma),
        "grow": torch.full((n,), grow),
    }


@pytest.mark.parametrize("grow", [2.5, -1.5, 4.0, -3.0])
def test_growing_matches_a_euclidean_disc(grow):
    m = masks(MaskConfig(), 6, 40, 52, seed=2)
    m[0, :, 5:35, 8:40] = 1  # thick enough to erode fully
    grown = grow_masks(m, torch.full((6,), grow)).numpy()[:, 0].astype(bool)
    for sample, out in zip(m[:, 0].numpy() > 0, grown, strict=True):
        if grow > 0:
            expected = ndimage.distance_transform_edt(~sample) <= grow
        else:  # outside the image is not "outside the mask": no erosion from the border
            inside = ndimage.distance_transform_edt(np.pad(sample, 8, constant_values=1))
            depth = inside[8:-8, 8:-8]
            expected = depth > min(-grow, depth.max() / 2)
        assert (out == expected).all()


def test_positive_grow_contains_the_mask_and_negative_grow_lies_inside_it():
    m = masks(MaskConfig(), 8, 48, 48, seed=5)
    dilated = compositing_alpha(m, boundary(8, hard=True, grow=3.0), grow=True)
    eroded = compositing_alpha(m, boundary(8, hard=True, grow=-2.0), grow=True)
    assert set(dilated.unique().tolist()) <= {0.0, 1.0}
    assert (dilated >= m).all() and (dilated > m).any()
    assert (eroded <= m).all() and (eroded < m).any()
    assert (eroded.flatten(1).sum(1) > 0).all(), "erosion thins masks, never erases them"


def test_each_sample_grows_by_its_own_radius():
    m = torch.zeros(2, 1, 21, 21)
    m[:, :, 10, 10] = 1
    grown = grow_masks(m, torch.tensor([1.0, 3.0]))
    assert grown[0].sum() == 5 and grown[1].sum() == 29  # discs of radius 1 and 3


def test_feathered_alpha_is_in_0_1_and_exactly_0_far_from_the_mask():
    m = masks(MaskConfig(), 8, 64, 64, seed=6)
    params = boundary(8, hard=False, grow=3.0, sigma=2.5)
    alpha = compositing_alpha(m, params, grow=True)
    assert 0 <= float(alpha.min()) and float(alpha.max()) <= 1
    distance = np.stack([ndimage.distance_transform_edt(s == 0) for s in m[:, 0].numpy()])
    far = torch.from_numpy(distance > 3.0 + 3 * 2.5 + 1)[:, None]
    assert far.any() and (alpha[far] == 0).all()
    assert (alpha[m > 0] > 0).all()


def test_without_grow_hard_alpha_is_the_mask():
    m = masks(MaskConfig(), 4, 32, 32)
    params = sample_boundary_params(4, BoundaryConfig(hard_prob=1.0), torch.Generator())
    assert torch.equal(compositing_alpha(m, params), m)


@pytest.mark.parametrize(
    "cfg, key",
    [
        (MaskConfig(blob_weight=-1.0), r"sim\.mask\.blob_weight"),
        (MaskConfig(stroke_weight=0, box_weight=0, blob_weight=0), r"sim\.mask\..*weight"),
        (MaskConfig(latent_grid_prob=1.5), r"sim\.mask\.latent_grid_prob"),
        (MaskConfig(blob_size=(0.4, 0.1)), r"sim\.mask\.blob_size"),
        (BoundaryConfig(alpha_grow=(3.0, -3.0)), r"sim\.boundary\.alpha_grow"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(cfg, key):
    with pytest.raises(ValueError, match=key):
        cfg.validate()
