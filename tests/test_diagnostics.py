"""The training diagnostics (src/pixperfect/training/diagnostics.py): the prior gate's
opening, the correction's size, the gradients per level and through the head and the gate,
and the band PSNR per artifact family in training and validation, measured on a tiny U-Net
on the seam-affine prior (configs/demo.yaml's refiner at test scale)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import free_port
from omegaconf import OmegaConf
from torch import nn

from data_sim.sampling import derive_seed
from data_sim.simulator import FAMILIES, family_names
from pixperfect.metrics import seam_scores
from pixperfect.models import FFCRefiner, UNetRefiner, build_refiner
from pixperfect.models.residual import GATE_OPEN
from pixperfect.training.diagnostics import (
    Diagnostics,
    FamilyBandPSNR,
    gradient_scalars,
    parameter_levels,
)

REGIONS = ("inside", "band", "outside")


def _refiner(**kw) -> UNetRefiner:
    torch.manual_seed(0)
    args = dict(base_channels=8, depth=2, colour_prior="seam_affine", global_context=True)
    return UNetRefiner(**{**args, **kw})


def _batch(photo: torch.Tensor) -> dict:
    """Two 64 px samples of the photo, a box edited by a colour shift in each."""
    target = torch.stack([photo, photo.flip(-1)])
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 12:52, 14:50] = 1  # 40 x 36: an interior, a band and an outside
    shift = torch.tensor([0.08, -0.05, 0.03]).view(1, 3, 1, 1)
    composite = (target + mask * shift).clamp(0, 1)
    return {"target": target, "composite": composite, "mask": mask}


def _step(diagnostics: Diagnostics, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """A watched forward, an L1 backward, and the step's diagnostics."""
    with diagnostics.watch(model):
        refined = model(batch["composite"], batch["mask"])
    (refined - batch["target"]).abs().mean().backward()
    return diagnostics.training_scalars(batch, refined.detach())


def test_the_gate_reads_open_at_sigmoid_3_at_initialisation_in_every_region(photo):
    scalars = _step(Diagnostics(), _refiner(), _batch(photo))
    expected = 1 / (1 + math.exp(-GATE_OPEN))  # 0.953
    for region in REGIONS:
        assert scalars[f"diag/gate_open_{region}"].item() == pytest.approx(expected, abs=0.01)
    # Both ways into the body carry a gradient, and the head's is the larger at the start.
    via_head, via_gate = scalars["diag/grad_body_via_head"], scalars["diag/grad_body_via_gate"]
    assert 0 < via_gate < via_head


def test_a_refiner_without_a_gate_reports_no_gate_opening(photo):
    scalars = _step(Diagnostics(), _refiner(colour_prior="none"), _batch(photo))
    assert not [tag for tag in scalars if "gate" in tag], sorted(scalars)
    assert "diag/correction_mean_band" in scalars


def test_the_correction_is_exactly_zero_beyond_the_edit_margin(photo):
    batch = _batch(photo)
    margin = _step(Diagnostics(), _refiner(edit_margin=4), batch)  # 4 px < the 8 px band
    assert margin["diag/correction_max_outside"].item() == 0
    assert margin["diag/correction_mean_outside"].item() == 0
    assert margin["diag/correction_max_band"] > 0 and margin["diag/correction_mean_inside"] > 0
    free = _step(Diagnostics(), _refiner(edit_margin=-1), batch)
    assert free["diag/correction_max_outside"] > 0  # the margin is what zeroes it


def test_the_correction_is_what_reaches_the_image_in_8_bit_levels(photo):
    # Without a prior or a gate the refined image is the composite plus the correction.
    batch, model = _batch(photo), _refiner(colour_prior="none", edit_margin=6)
    diagnostics = Diagnostics()
    with diagnostics.watch(model):
        refined = model(batch["composite"], batch["mask"]).detach()
    scalars = diagnostics.training_scalars(batch, refined)
    reached = (refined - batch["composite"]).abs() * 255
    peak = max(scalars[f"diag/correction_max_{r}"].item() for r in REGIONS)
    assert peak == pytest.approx(reached.max().item(), rel=1e-5)
    assert 0 < scalars["diag/correction_mean_band"] < peak


def test_the_taps_live_on_the_live_generator_for_one_forward_only(photo):
    model = _refiner()
    ema = copy.deepcopy(model)
    diagnostics, batch = Diagnostics(), _batch(photo)
    with diagnostics.watch(model):
        assert model.head._forward_hooks and model.gate.conv._forward_hooks
        assert not ema.head._forward_hooks and not ema.gate.conv._forward_hooks
        model(batch["composite"], batch["mask"])
    assert not model.head._forward_hooks and not model.head._forward_pre_hooks
    assert not model.gate.conv._forward_hooks and not model.gate.conv._forward_pre_hooks
    with diagnostics.watch(model, enabled=False):  # a step that is not logged: no tap
        refined = model(batch["composite"], batch["mask"])
    assert not any(t.startswith("diag/") for t in diagnostics.training_scalars(batch, refined))


def test_the_taps_see_through_ddp_as_lightning_wraps_the_module(photo):
    class Owner(nn.Module):  # Lightning wraps the module that owns the generator
        def __init__(self) -> None:
            super().__init__()
            self.generator = _refiner()

        def forward(self, composite, mask):
            return self.generator(composite, mask)

    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        owner = Owner()
        wrapped = nn.parallel.DistributedDataParallel(owner)
        diagnostics, batch = Diagnostics(), _batch(photo)
        with diagnostics.watch(owner.generator):
            refined = wrapped(batch["composite"], batch["mask"])
        (refined - batch["target"]).abs().mean().backward()
        scalars = diagnostics.training_scalars(batch, refined.detach())
    finally:
        torch.distributed.destroy_process_group()
    assert scalars["diag/gate_open_band"].item() == pytest.approx(0.953, abs=0.01)
    assert scalars["diag/grad_body_via_head"] > 0 and scalars["diag/grad_body_via_gate"] > 0


@pytest.mark.parametrize(
    "model, levels",
    [
        (
            lambda: _refiner(colour_head=True),
            {"stem", "down.0", "down.1", "fuse.0", "fuse.1", "head", "gate", "context", "colour"},
        ),
        (
            lambda: FFCRefiner(base_channels=8, depth=2, ffc_blocks=2, colour_prior="reinhard"),
            {"stem", "down.0", "down.1", "bottleneck", "fuse.0", "fuse.1", "out_norm", "head"}
            | {"gate"},
        ),
        (
            lambda: build_refiner(
                "resunet",
                base_channels=8,
                depth=2,
                colour_prior="seam_affine",
                global_context=True,
                colour_field=True,
            ),  # fmt: skip
            {"stem", "down.0", "down.1", "fuse.0", "fuse.1", "out_norm", "head", "gate"}
            | {"context", "field"},
        ),
    ],
    ids=["unet", "ffc", "resunet"],
)
def test_the_levels_cover_every_parameter_exactly_once(model, levels):
    model = model()
    found = parameter_levels(model)
    assert set(found) == levels
    ids = [id(p) for parameters in found.values() for p in parameters]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert set(ids) == {id(p) for p in model.parameters()}


def test_the_gradient_per_level_is_the_mean_absolute_value_of_its_elements(photo):
    model = _refiner()
    _step(Diagnostics(), model, _batch(photo))
    scalars = gradient_scalars(model)
    levels = parameter_levels(model)
    assert {f"grad/{k}" for k in levels} < set(scalars)
    down = torch.cat([p.grad.abs().flatten() for p in levels["down.1"]]).mean()
    assert scalars["grad/down.1"].item() == pytest.approx(down.item(), rel=1e-5)
    assert all(scalars[f"grad/{k}"] > 0 for k in levels), scalars  # every level learns
    smallest = min(scalars[f"grad/{k}"] for k in levels)
    assert scalars["grad/head_over_deepest"] == pytest.approx(scalars["grad/head"] / smallest)
    assert scalars["grad/levels_below_adam_eps"].item() == 0
    # A level without a gradient reads 0 and counts below eps.
    for p in levels["down.0"]:
        p.grad = None
    starved = gradient_scalars(model)
    assert starved["grad/down.0"].item() == 0 and starved["grad/levels_below_adam_eps"] == 1


def test_validation_reports_band_psnr_per_family_present_over_the_set(photo):
    batch = _batch(photo)
    refined = (batch["composite"] + 0.5 * (batch["target"] - batch["composite"])).clamp(0, 1)
    metric = FamilyBandPSNR(band_width=8)
    # Two batches: "colour+texture" counts for both families; the clean sample for none.
    metric.update(refined, batch["composite"], batch["target"], batch["mask"], ["colour", ""])
    families = ["colour+texture", "misalign"]
    metric.update(refined, batch["composite"], batch["target"], batch["mask"], families)
    metric.update(refined, batch["composite"], batch["target"], batch["mask"], None)
    scalars = metric.scalars()
    present = {"colour", "texture", "misalign", "all"}
    assert {t.split("/")[1] for t in scalars} == present
    assert set(FAMILIES) > present - {"all"}  # the others have no tag
    ours = seam_scores(refined, batch["target"], batch["mask"], 8)["band_psnr"]
    identity = seam_scores(batch["composite"], batch["target"], batch["mask"], 8)["band_psnr"]
    colour = (ours[0] + ours[0]) / 2  # sample 0 of both batches
    assert scalars["val_family/colour/band_psnr"].item() == pytest.approx(colour.item(), 1e-5)
    assert scalars["val_family/misalign/band_psnr"].item() == pytest.approx(ours[1].item(), 1e-5)
    gain = ours[1] - identity[1]
    assert scalars["val_family/misalign/band_psnr_gain"].item() == pytest.approx(gain.item(), 1e-4)
    assert scalars["val_family/texture/identity_band_psnr"].item() == pytest.approx(
        identity[0].item(), 1e-5
    )
    assert gain > 0  # halfway to the target is better than the composite
    assert metric.count.sum() == 0  # reset after reading
    everything = torch.cat([ours, ours]).mean()  # every sample, the clean one included
    assert scalars["val_family/all/band_psnr"].item() == pytest.approx(everything.item(), 1e-5)
    assert scalars["val_family/all/harm_rate"].item() == 0
    assert "val_family/all/prior_band_psnr" not in scalars  # no prior was given


def test_validation_scores_the_prior_beside_the_refiner_and_counts_the_harmed(photo):
    batch = _batch(photo)
    worse = (batch["composite"] + 0.2).clamp(0, 1)  # far from the target everywhere
    metric = FamilyBandPSNR(band_width=8)
    metric.update(worse, batch["composite"], batch["target"], batch["mask"], ["colour", ""],
                  prior=batch["target"])  # fmt: skip
    scalars = metric.scalars()
    assert scalars["val_family/all/harm_rate"].item() == 100
    assert scalars["val_family/colour/prior_band_psnr"].item() == pytest.approx(100, abs=0.01)
    ours = seam_scores(worse, batch["target"], batch["mask"], 8)["band_psnr"]
    assert scalars["val_family/all/gain_over_prior"].item() == pytest.approx(
        ours.mean().item() - 100, 1e-4
    )


def test_the_validation_batch_keeps_its_families_to_the_per_family_scores(tiny_config):
    from pixperfect.training.datamodule import PhotoDataModule
    from pixperfect.training.module import RefinerModule

    cfg = tiny_config("data.val_samples_per_image=3")
    datamodule = PhotoDataModule(cfg)
    datamodule.setup()
    module = RefinerModule(OmegaConf.to_container(cfg))
    seen = set()
    for index, batch in enumerate(datamodule.val_dataloader()):
        assert isinstance(batch["families"], list) and all(batch["families"])
        seen |= {f for s in batch["families"] for f in s.split("+")}
        batch = module.on_before_batch_transfer(batch, 0)
        assert "families" not in batch  # strings stay on the host
        module.validation_step(batch, index + 1)  # (index 0 logs an image grid)
    scalars = module.diagnostics.validation_scalars()
    assert {t.split("/")[1] for t in scalars} == seen | {"all"}
    assert all(math.isfinite(v.item()) for v in scalars.values())


def test_a_step_simulated_in_training_labels_its_samples_with_their_families(tiny_config, photo):
    from pixperfect.training.module import RefinerModule

    module = RefinerModule(OmegaConf.to_container(tiny_config("data.batch_size=4")))
    clean = {"target": torch.stack([photo[:, :32, :32], photo[:, 32:, 32:]] * 2)}
    module.diagnostics.take_families(clean)  # what on_before_batch_transfer does
    batch = module.with_artifacts(clean)
    seed = derive_seed(module.cfg.run.seed, 0, 0)
    _, params = module.simulator(clean["target"], torch.Generator().manual_seed(seed))
    expected = ["+".join(family_names(params, i)) for i in range(4)]
    assert module.diagnostics.families(4) == expected
    refined = batch["composite"]  # the identity: a gain of 0 in every family it has
    scalars = module.diagnostics.training_scalars(batch, refined)
    gains = {t: v for t, v in scalars.items() if t.startswith("train_family/")}
    names = {f for s in expected for f in s.split("+") if f}
    assert {t.split("/")[1] for t in gains} == names | {"all"}
    assert all(v.item() == 0 for v in gains.values())


def test_artifact_shards_carry_each_samples_families_from_its_params(tmp_path):
    from pixperfect.shards.build import BuildSpec, build
    from pixperfect.shards.reader import read_all, record_families, training_stream

    sources = ["skimage:astronaut", "skimage:rocket"]
    build(BuildSpec(sources=sources, size=32, crops_per_image=2, shard_size=2), tmp_path)
    samples = read_all(tmp_path)
    assert all(isinstance(s["families"], str) for s in samples)
    batch = next(iter(training_stream(tmp_path, 2, resample=False, shuffle_buffer=0)))
    assert batch["families"] == [s["families"] for s in samples[:2]]
    # A label from params.json, as the simulator names it; unreadable parameters: none.
    sim = {"colour": {"applied": [True]}, "misalign": {"applied": [True]}}
    assert record_families({"params.json": json.dumps({"sim": sim}).encode()}) == (
        "colour+misalign"
    )
    assert record_families({"params.json": b"{not json"}) == ""
