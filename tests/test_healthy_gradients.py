"""Every level of the refiner trains: at initialisation and after a few Adam steps, each
level's mean |gradient| per weight is far above Adam's eps, and the spread from the head
to the deepest level stays within a stated factor. The plain U-Net (the shipped v2's
architecture) is the negative control: its deep levels sit near eps (docs/training.md)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from data_sim.simulator import ArtifactSimulator, SimConfig
from pixperfect.models import build_refiner

EPS = 1e-8  # Adam's default eps, the floor a gradient must clear by far
FLOOR = 1000 * EPS  # every level's mean |grad| per weight
HEAD_TO_DEEPEST = 3e4  # the head's mean |grad| over the smallest level's
LEVEL_SPREAD = 300.0  # largest over smallest of the levels (stem, down, fuse): the plain
# U-Net reaches 3e3, the plain FFC 2.5e4-7.7e4; the normalised ones stay near 100

# The reference recipe's refiner at test size: seam-affine prior, gate, global branch.
COMMON = {"base_channels": 16, "depth": 3, "edit_margin": 16, "colour_prior": "seam_affine"}
ARCHITECTURES = {
    "resunet": ("resunet", {**COMMON, "global_context": True, "colour_field": True}),
    "ffc": ("ffc", {**COMMON, "ffc_blocks": 2}),  # the paper's refiner at test width
    "unet": ("unet", {**COMMON, "global_context": True}),
    "ffc-plain": ("ffc", {**COMMON, "ffc_blocks": 2, "ffc_norm": "none"}),
}


def level_of(name: str) -> str:
    """``down.2.1.body.0.weight`` -> ``down.2``; ``head.weight`` -> ``head``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("down", "fuse") else parts[0]


def level_gradients(model: torch.nn.Module) -> dict[str, float]:
    """Mean |grad| per weight of each level's weight tensors (biases and norms left out:
    their gradients are sums, not the per-weight signal that competes with eps)."""
    sums, counts = defaultdict(float), defaultdict(int)
    for name, p in model.named_parameters():
        if p.grad is not None and p.ndim > 1:
            sums[level_of(name)] += float(p.grad.abs().sum())
            counts[level_of(name)] += p.numel()
    return {k: sums[k] / counts[k] for k in sums}


def unet_levels(grads: dict[str, float]) -> dict[str, float]:
    """The encoder and decoder levels: the path from the input to the head."""
    return {k: v for k, v in grads.items() if k == "stem" or k.startswith(("down.", "fuse."))}


@pytest.fixture(scope="module")
def batches() -> list[dict]:
    """Four batches of real artifacts (the default recipe, no codec): 64 px crops of
    scikit-image's astronaut at 192 px."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255
    photo = torch.nn.functional.interpolate(photo, size=(192, 192), mode="area")[0]
    sim = ArtifactSimulator(SimConfig(), ensure_artifact=True)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(4):
        corners = torch.randint(0, 192 - 64, (4, 2), generator=gen).tolist()
        crops = torch.stack([photo[:, y : y + 64, x : x + 64] for y, x in corners])
        out.append(sim(crops, gen)[0])
    return out


def train_and_measure(name: str, kwargs: dict, batches: list[dict]) -> list[dict[str, float]]:
    """Level gradients at initialisation and after three Adam steps of the reference loss
    (RGB L1 x 64)."""
    torch.manual_seed(0)
    model = build_refiner(name, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.99))
    measured = []
    for i, batch in enumerate(batches):
        opt.zero_grad()
        refined = model(batch["composite"], batch["mask"])
        (64 * (refined - batch["target"]).abs().mean()).backward()
        if i in (0, len(batches) - 1):
            measured.append(level_gradients(model))
        opt.step()
    return measured


def unhealthy(grads: dict[str, float]) -> list[str]:
    """What breaks the rule for these level gradients (empty: every level trains)."""
    levels = unet_levels(grads)
    low = min(grads, key=grads.get)
    broken = []
    if grads[low] <= FLOOR:
        broken.append(f"{low} gets {grads[low]:.1e} per weight, eps is {EPS}")
    if grads["head"] / grads["down.2"] >= HEAD_TO_DEEPEST:
        broken.append(f"head / deepest level = {grads['head'] / grads['down.2']:.1e}")
    if max(levels.values()) / min(levels.values()) >= LEVEL_SPREAD:
        broken.append(f"level spread {max(levels.values()) / min(levels.values()):.1e}")
    return broken


@pytest.mark.parametrize("arch", ["resunet", "ffc"])
def test_every_level_trains_at_init_and_after_steps(arch, batches):
    name, kwargs = ARCHITECTURES[arch]
    for grads in train_and_measure(name, kwargs, batches):
        assert {"stem", "down.0", "down.2", "fuse.2", "head", "gate"} <= set(grads)
        assert unhealthy(grads) == [], grads


@pytest.mark.parametrize("arch", ["unet", "ffc-plain"])
def test_the_plain_stacks_deep_levels_sit_near_eps(arch, batches):
    """The negative control: the rule above fails on the shipped v2's architecture and on
    the FFC without normalisation."""
    name, kwargs = ARCHITECTURES[arch]
    for grads in train_and_measure(name, kwargs, batches):
        assert any("level spread" in why for why in unhealthy(grads)), grads
