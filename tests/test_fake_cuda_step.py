"""The paper step's forward parts on a fake ``cuda`` device: device
bugs caught without a GPU.

Simulation with the TAEF2 codec, the paper config's generator (narrower: base_channels=8,
same architecture), every loss term, the discriminator (not R1: a gradient, whose backward
needs a real CUDA context) and the tone map run
with every tensor on ``cuda`` under torch's FakeTensorMode (tests/fake_cuda.py). A host read
or a CPU tensor mixed into device work fails the test naming the project line. LPIPS's
pretrained weights are not available here: a random-weight LPIPS stands in, for this device
check only (its values are never used).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from assets import TAESD_DIR, require
from fake_cuda import CUDA, FakeCudaGenerator, checked, fake_cuda, to_fake_cuda

import data_sim.masks
import data_sim.noise
import data_sim.sampling
import data_sim.texture
from data_sim.masks import BLOB, BOX, STROKE
from data_sim.transfer import to_device
from pixperfect.config import load_config
from pixperfect.losses.lpips import LPIPS
from pixperfect.training.module import RefinerModule

SIZE, BATCH = 64, 4


def _random_lpips(net: str) -> LPIPS:
    import lpips as lpips_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        network = lpips_package.LPIPS(
            pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False
        )
    return LPIPS(network, net)


@pytest.fixture
def paper_module() -> RefinerModule:
    """The paper config's module (simulator with TAEF2, generator, discriminator, objective
    with every term), built on the CPU outside the fake mode."""
    cfg = load_config(
        "configs/paper.yaml",
        [
            "model.base_channels=8",
            f"data.crop_size={SIZE}",
            "loss.lpips_missing=skip",
            f"sim.texture.vae.path={require(TAESD_DIR)}",
        ],
    )
    module = RefinerModule(cfg)
    objective = module.objective
    if objective.lpips is None:  # weights missing: a random-weight stand-in, device check only
        objective.lpips = _random_lpips(cfg.loss.lpips_net)
        objective.weights["lpips"] = float(cfg.loss.lpips)
        objective.weights["tone_lpips"] = float(cfg.loss.tone_lpips)
    module.simulator.families[-1].codec  # noqa: B018 - load TAEF2 on the CPU, outside the mode
    return module


def _every_path_params(module: RefinerModule) -> dict:
    """A batch's drawn parameters (CPU), then set so that every branch of the simulation
    runs: every family on every sample, the latent round trip, JPEG, a nearly-right sample,
    every mask kind, a latent-snapped mask, hard and feathered pastes, growth and erosion."""
    params = module.simulator.sample_params(BATCH, SIZE, SIZE, torch.Generator().manual_seed(3))
    for family in ("content", "misalign", "colour", "texture"):
        params[family]["applied"][:] = True
    params["texture"]["vae"][:] = True
    params["texture"]["jpeg"][:2] = True
    params["texture"]["blur_sigma"][0] = 0.8
    params["misalign"]["warp"][1] += 0.5
    params["mix"]["strength"][2] = 0.3
    kind = torch.tensor([STROKE, BOX, BLOB, STROKE])
    params["mask"].update(kind=kind, is_box=kind == BOX)
    params["mask"]["latent_cell"][:] = torch.tensor([8, 0, 0, 4])
    params["boundary"]["hard"][:] = torch.tensor([True, False, False, True])
    params["boundary"]["grow"][:] = torch.tensor([2.0, -2.0, 1.5, -1.0])
    return params


def _forward_step(
    module: RefinerModule, plan: dict, params: dict, images: torch.Tensor, ship: Callable
):
    """What the step runs on the device, forward: one copy of the simulation plan (``ship``),
    the simulation, G, every generator term (tone map included) and D's terms with R1."""
    moved = ship(plan, CUDA)
    batch = module.simulator.run(images, params, moved)
    refined = module.generator(batch["composite"], batch["mask"])
    objective, generator = module.objective, FakeCudaGenerator().manual_seed(0)
    step = max(objective.cfg.tone.warmup_steps, objective.gan.warmup_steps)  # all terms on
    terms = objective.generator_terms(
        refined.float(), batch["target"], batch["mask"], step, generator, module.discriminator
    )
    d_terms = objective.discriminator_terms(
        module.discriminator,
        batch["target"],
        refined.detach(),
        batch["mask"],
        generator,
        tone=terms.tone,
        # Not a step where lazy R1 is due: R1 is a gradient, and torch's autograd engine
        # needs a real CUDA context to run a backward on cuda tensors (forward parts only).
        d_step=1,
    )
    return batch, terms, d_terms


def _run_on_fake_cuda(module: RefinerModule, plan: dict, params: dict, ship: Callable = to_device):
    with fake_cuda() as mode:
        to_fake_cuda(
            mode,
            module.generator,
            module.discriminator,
            module.objective.lpips.network,
            module.simulator.families[-1].codec,
        )
        images = torch.rand(BATCH, 3, SIZE, SIZE, device=CUDA)
        with checked(max_copies=1) as checker:  # the simulation plan, once
            out = _forward_step(module, plan, params, images, ship)
    return out, checker


@pytest.fixture
def fake_generators(monkeypatch):
    """The texture family's device generator, made on the fake device."""
    monkeypatch.setattr(data_sim.texture, "device_generator", _fake_generator)
    assert data_sim.sampling.device_generator is not _fake_generator


def _fake_generator(device: torch.device, seed: int) -> torch.Generator:
    assert device.type == "cuda"
    return FakeCudaGenerator().manual_seed(seed)


def test_the_paper_step_runs_on_cuda_without_a_host_read_or_a_cpu_tensor(
    paper_module, fake_generators
):
    params = _every_path_params(paper_module)
    plan = paper_module.simulator.plan(params, SIZE, SIZE)  # the CPU side, outside the mode
    (batch, terms, d_terms), checker = _run_on_fake_cuda(paper_module, plan, params)

    assert checker.copies and len(checker.copies) == 1, checker.copies  # the plan, once
    assert {t.device.type for t in batch.values()} == {"cuda"}
    objective = paper_module.objective
    assert set(terms.terms) == {*objective.active(10**9), "loss"}
    assert {"lpips", "tone_lpips", "adversarial", "tone_adversarial"} <= set(terms.terms)
    assert terms.loss.device.type == "cuda" and terms.tone is not None
    assert d_terms.tone is not None
    assert d_terms.loss.device.type == "cuda"


def test_a_cpu_tensor_put_into_the_simulation_is_caught_naming_the_line(
    paper_module, fake_generators
):
    """The checker's negative case: one colour parameter left on the CPU after the plan's
    copy (moved by the family itself: a second copy) fails the run, and the message names
    colour.py's line that moved it."""
    params = _every_path_params(paper_module)
    plan = paper_module.simulator.plan(params, SIZE, SIZE)
    stays_on_cpu = plan["families"]["colour"]["sub"]["gamma"]

    def move_all_but_gamma(tree: dict, device: torch.device) -> dict:
        moved = to_device(tree, device)
        moved["families"]["colour"]["sub"]["gamma"] = stays_on_cpu
        return moved

    with pytest.raises(AssertionError, match=r"data_sim/colour\.py:\d+ in jitter_colours"):
        _run_on_fake_cuda(paper_module, plan, params, move_all_but_gamma)


def test_a_host_read_in_the_simulation_is_caught_naming_the_line(
    paper_module, fake_generators, monkeypatch
):
    """The other negative case: a read of a device value (as the old noise code made)
    fails the run, naming the line."""
    params = _every_path_params(paper_module)
    plan = paper_module.simulator.plan(params, SIZE, SIZE)
    original = data_sim.texture._add_noise_

    def noise_reading_the_device(x: torch.Tensor, noise_plan: dict) -> torch.Tensor:
        float(noise_plan["sigma"].max())  # a host read of a device value
        return original(x, noise_plan)

    monkeypatch.setattr(data_sim.texture, "_add_noise_", noise_reading_the_device)
    with pytest.raises(AssertionError, match="DataDependentOutputException"):
        _run_on_fake_cuda(paper_module, plan, params)


def test_the_feathered_and_blurred_paths_run_without_a_host_read(
    paper_module, fake_generators, monkeypatch
):
    """The Gaussian blurs (feathered pastes, content grain, texture blur) run on the device
    without reading sigma: data_sim.blur, not kornia's gaussian_blur2d, whose positivity
    check is a host read of a device sigma (tests/test_blur.py)."""
    params = _every_path_params(paper_module)
    plan = paper_module.simulator.plan(params, SIZE, SIZE)
    blurred: list[str] = []
    for module in (data_sim.masks, data_sim.noise, data_sim.texture):

        def spy(x, *args, _blur=module.gaussian_blur2d, _name=module.__name__, **kwargs):
            blurred.append(_name)
            assert x.device.type == "cuda"
            return _blur(x, *args, **kwargs)

        monkeypatch.setattr(module, "gaussian_blur2d", spy)
    (batch, _, _), checker = _run_on_fake_cuda(paper_module, plan, params)

    assert set(blurred) == {"data_sim.masks", "data_sim.noise", "data_sim.texture"}, blurred
    assert len(checker.copies) == 1, checker.copies  # the plan, once
    assert {t.device.type for t in batch.values()} == {"cuda"}
