import pytest
import torch

from data_sim.masks import MASK_KINDS
from data_sim.simulator import ArtifactSimulator, SimConfig, describe


def _batch(photo: torch.Tensor, n: int = 6) -> torch.Tensor:
    return photo[None].expand(n, -1, -1, -1).contiguous()


def test_same_seed_gives_the_same_batch_and_parameters(photo):
    sim = ArtifactSimulator(SimConfig())
    a, pa = sim(_batch(photo), 7)
    b, pb = sim(_batch(photo), 7)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for family in pa:
        for key in pa[family]:
            assert torch.equal(pa[family][key], pb[family][key]), (family, key)


def test_different_seeds_give_different_masks(photo):
    sim = ArtifactSimulator(SimConfig())
    a, _ = sim(_batch(photo), 1)
    b, _ = sim(_batch(photo), 2)
    assert not torch.equal(a["mask"], b["mask"])


def test_pixels_outside_the_compositing_alpha_are_untouched(photo):
    out, _ = ArtifactSimulator(SimConfig())(_batch(photo, 16), 3)
    outside = (out["alpha"] == 0).expand_as(out["composite"])
    assert outside.any()
    assert torch.equal(out["composite"][outside], out["target"][outside])


def test_colour_shift_changes_pixels_inside_the_mask(photo):
    cfg = SimConfig()
    cfg.colour.p = 1.0
    out, _ = ArtifactSimulator(cfg)(_batch(photo, 8), 4)
    inside = out["mask"].bool().expand_as(out["composite"])
    diff = (out["composite"] - out["target"]).abs()[inside]
    assert diff.mean() > 0.005


def test_outputs_have_the_documented_shapes_dtypes_and_ranges(photo):
    out, _ = ArtifactSimulator(SimConfig())(_batch(photo, 4), 5)
    assert out["composite"].shape == (4, 3, 64, 64) and out["mask"].shape == (4, 1, 64, 64)
    for key, value in out.items():
        assert value.dtype == torch.float32, key
        assert 0 <= float(value.min()) and float(value.max()) <= 1, key
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    assert (out["mask"].flatten(1).sum(1) > 0).all(), "every sample has an edit region"


def test_hard_boundaries_paste_exactly_the_mask():
    cfg = SimConfig()
    cfg.boundary.hard_prob = 1.0
    cfg.boundary.alpha_grow = (0.0, 0.0)
    out, _ = ArtifactSimulator(cfg)(torch.rand(4, 3, 48, 48), 0)
    assert torch.equal(out["alpha"], out["mask"])


def test_each_sample_draws_its_own_parameters(photo):
    _, params = ArtifactSimulator(SimConfig())(_batch(photo, 8), 6)
    assert params["colour"]["hue"].unique().numel() == 8
    assert params["mask"]["vertices"][:, 0, 0].unique(dim=0).shape[0] == 8


def test_colour_probability_is_honoured_over_many_draws():
    cfg = SimConfig()
    cfg.colour.p = 0.3
    params = ArtifactSimulator(cfg).sample_params(4000, 32, 32, torch.Generator().manual_seed(0))
    assert abs(params["colour"]["applied"].float().mean().item() - 0.3) < 0.03


def test_ensure_artifact_leaves_no_clean_sample():
    cfg = SimConfig()
    cfg.colour.p = 0.0
    sim = ArtifactSimulator(cfg, ensure_artifact=True)
    params = sim.sample_params(64, 32, 32, torch.Generator().manual_seed(0))
    assert sim.any_applied(params).all()


def test_describe_names_the_families_of_a_sample(photo):
    _, params = ArtifactSimulator(SimConfig())(_batch(photo, 2), 0)
    text = describe(params, 0)
    assert any(kind in text for kind in MASK_KINDS) and ("hard" in text or "feather" in text)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(2, 1, 16, 16), "RGB"),
        ((torch.rand(2, 3, 16, 16) * 255).to(torch.uint8), "floating-point"),
        (torch.rand(2, 3, 16, 16) * 255, r"\[0, 1\]"),
    ],
)
def test_bad_inputs_are_refused_with_how_to_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        ArtifactSimulator(SimConfig())(bad, 0)


def test_a_given_mask_replaces_the_drawn_one(photo):
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 10:30, 20:40] = 1
    out, _ = ArtifactSimulator(SimConfig())(_batch(photo, 2), 0, mask=mask)
    assert torch.equal(out["mask"], mask)


def test_a_mask_of_the_wrong_size_is_refused_naming_both_shapes(photo):
    with pytest.raises(ValueError, match=r"\(2, 1, 32, 32\).*\(2, 3, 64, 64\)"):
        ArtifactSimulator(SimConfig())(_batch(photo, 2), 0, mask=torch.zeros(2, 1, 32, 32))


def test_families_in_place_write_into_their_input_and_match_the_copying_path(photo):
    from data_sim.colour import apply_colour_shift
    from data_sim.content import apply_content_discontinuity
    from data_sim.misalign import apply_misalignment, mask_centre
    from data_sim.texture import TextureFamily

    cfg = SimConfig()
    for family in (cfg.colour, cfg.content, cfg.misalign, cfg.texture):
        family.p = 0.5  # some samples applied, some untouched
    sim = ArtifactSimulator(cfg)
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    params = sim.sample_params(8, 64, 64, torch.Generator().manual_seed(1))
    out, _ = sim(images, 1)
    mask = out["mask"]
    params["misalign"]["centre"] = mask_centre(mask)
    texture = TextureFamily(cfg.texture)
    families = {
        "content": lambda x, **kw: apply_content_discontinuity(x, mask, params["content"], **kw),
        "misalign": lambda x, **kw: apply_misalignment(x, params["misalign"], **kw),
        "colour": lambda x, **kw: apply_colour_shift(x, params["colour"], **kw),
        "inside": lambda x, **kw: texture.inside(x, params["texture"], **kw),
        "outside": lambda x, **kw: texture.outside(x, params["texture"], **kw),
    }
    before = images.clone()
    for name, apply in families.items():
        copied = apply(images)
        assert torch.equal(images, before), f"{name} changed its input without inplace"
        assert not torch.equal(copied, images), name  # the family did something
        owned = images.clone()
        result = apply(owned, inplace=True)
        assert result is owned, name
        assert torch.equal(result, copied), name


def _mixed(clean_p: float = 0.0, nearly_right_p: float = 0.0, strength=(0.1, 0.35)) -> SimConfig:
    from data_sim.mix import MixConfig

    cfg = SimConfig()
    cfg.mix = MixConfig(
        nearly_right_p=nearly_right_p, nearly_right_strength=strength, clean_p=clean_p
    )
    return cfg


def test_clean_samples_of_the_training_mix_are_the_photo_itself(photo):
    out, params = ArtifactSimulator(_mixed(clean_p=1.0))(_batch(photo, 8), 3)
    assert torch.equal(out["composite"], out["target"])
    assert torch.equal(out["target"], _batch(photo, 8).clamp(0, 1)), "no grain, no JPEG"
    assert all(describe(params, i) == "clean (no artifact)" for i in range(8))


def test_nearly_right_samples_carry_a_faint_copy_of_the_drawn_edit(photo):
    from data_sim.mix import NEARLY_RIGHT

    sim = ArtifactSimulator(_mixed(nearly_right_p=1.0, strength=(0.2, 0.2)))
    params = sim.sample_params(6, 64, 64, torch.Generator().manual_seed(5))
    assert (params["mix"]["kind"] == NEARLY_RIGHT).all()
    faint = sim.apply(_batch(photo), params)
    assert "nearly right x0.20" in describe(params, 0)
    params["mix"]["strength"].fill_(1.0)
    full = sim.apply(_batch(photo), params)
    assert torch.equal(faint["target"], full["target"])
    diff_faint = faint["composite"] - faint["target"]
    diff_full = full["composite"] - full["target"]
    assert diff_full.abs().max() > 0.05
    torch.testing.assert_close(diff_faint, 0.2 * diff_full, atol=1e-5, rtol=0)


def test_the_mix_draws_its_stated_shares_and_evaluation_never_uses_it():
    from data_sim.mix import CLEAN, NEARLY_RIGHT

    cfg = _mixed(clean_p=0.1, nearly_right_p=0.3)
    kind = ArtifactSimulator(cfg).sample_params(4000, 32, 32, torch.Generator().manual_seed(0))[
        "mix"
    ]["kind"]
    assert abs((kind == CLEAN).float().mean().item() - 0.1) < 0.02
    assert abs((kind == NEARLY_RIGHT).float().mean().item() - 0.3) < 0.03
    evaluation = ArtifactSimulator(cfg, ensure_artifact=True)
    params = evaluation.sample_params(500, 32, 32, torch.Generator().manual_seed(0))
    assert (params["mix"]["strength"] == 1).all() and (params["mix"]["kind"] == 0).all()
    assert ArtifactSimulator.any_applied(params).all()


def test_shares_of_the_mix_that_add_up_to_more_than_everything_are_refused():
    with pytest.raises(ValueError, match="sim.mix.nearly_right_p"):
        _mixed(clean_p=0.6, nearly_right_p=0.6).validate()
