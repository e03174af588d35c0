"""The recipes of docs/extending.md, followed to the letter: an artifact family, a refiner
architecture, a loss term and an evaluation baseline, each added where the page says (here
by patching the schema and the registries for the test's duration), work through the
simulator, the config, the objective, training, inference and evaluation without a change
anywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

import pytest
import torch
from conftest import ROOT, TINY
from torch import nn

import data_sim.simulator as simulator
import pixperfect.config as config_module
from data_sim.family import Family, Params, applied_output
from data_sim.simulator import ArtifactSimulator, SimConfig, describe, family_names
from pixperfect.config import Config, LossConfig, load_config
from pixperfect.evaluation.acceptance import best_baseline
from pixperfect.evaluation.baselines import BASELINES
from pixperfect.evaluation.evaluate import build_methods
from pixperfect.inference.refiner import Refiner
from pixperfect.models import REFINERS
from pixperfect.models.residual import ResidualRefiner, apply_correction, conv3x3, decode
from pixperfect.training.objective import PIXEL_TERMS, Compared, Objective
from pixperfect.training.train import train

# --- An artifact family: data_sim/vignette.py in the recipe ------------------------------


@dataclass
class DimConfig:
    p: float = 0.5
    strength: tuple[float, float] = (0.2, 0.4)

    def validate(self) -> None:
        if not 0 <= self.p <= 1 or not 0 <= self.strength[0] <= self.strength[1] <= 1:
            raise ValueError("sim.dim: p in [0, 1] and 0 <= strength[0] <= strength[1] <= 1")


class DimFamily(Family[DimConfig]):
    """The edited content comes back darker (a toy exposure mismatch)."""

    key = "dim"

    def sample(self, batch_size: int, height: int, width: int, generator: torch.Generator):
        lo, hi = self.cfg.strength
        return {
            "applied": torch.rand(batch_size, generator=generator) < self.cfg.p,
            "strength": lo + (hi - lo) * torch.rand(batch_size, generator=generator),
        }

    def apply(self, images, params: Params, mask, *, inplace: bool = False):
        out, idx = applied_output(images, params, inplace=inplace)
        if len(idx):
            keep = 1 - params["strength"][idx].to(out.device, out.dtype).view(-1, 1, 1, 1)
            out[idx] = out[idx] * keep
        return out

    @classmethod
    def describe(cls, params: Params, index: int) -> str:
        return f"dimmed by {float(params['strength'][index]):.2f}"


def test_a_family_added_as_the_docs_say_is_drawn_applied_described_and_reported(monkeypatch):
    # Step 2 of the recipe: a SimConfig section, a FAMILY_TYPES entry, its label.
    config = make_dataclass(
        "SimConfigWithDim",
        [("dim", DimConfig, field(default_factory=DimConfig))],
        bases=(SimConfig,),
    )
    monkeypatch.setattr(simulator, "FAMILY_TYPES", (*simulator.FAMILY_TYPES, DimFamily))
    monkeypatch.setattr(simulator, "FAMILIES", (*simulator.FAMILIES, "dim"))
    cfg = config()
    for key in ("colour", "texture", "content", "misalign"):
        getattr(cfg, key).p = 0.0  # the new family alone, so its effect is all there is
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    batch, params = ArtifactSimulator(cfg)(images, 1)

    applied = params["dim"]["applied"]
    assert applied.any() and not applied.all()
    edit = batch["alpha"] > 0
    for i in range(8):
        changed = (batch["composite"][i] - batch["target"][i]).abs() > 1e-6
        if applied[i]:
            assert changed.any() and not (changed & ~edit[i]).any()  # darker inside only
            assert family_names(params, i) == ["dim"] and "dimmed by" in describe(params, i)
        else:
            assert not changed.any() and family_names(params, i) == []


# --- A refiner architecture: src/pixperfect/models/<name>.py in the recipe ---------------


class PlainRefiner(ResidualRefiner):
    """One convolution a level on the way down and up: the smallest U-shaped refiner."""

    def __init__(
        self,
        base_channels: int = 8,
        depth: int = 2,
        edit_margin: int = -1,
        colour_prior: str = "none",
        prior_gate: bool = True,
    ) -> None:
        super().__init__(base_channels, depth, edit_margin, colour_prior)
        w = self.widths
        self.down = nn.ModuleList(conv3x3(w[i], w[i + 1], stride=2) for i in range(depth))
        self.fuse = nn.ModuleList(conv3x3(w[i + 1] + w[i], w[i]) for i in reversed(range(depth)))
        self._add_head(prior_gate)

    def forward(self, composite, mask, prior=None):
        x, skips, base = self._encode(composite, mask, prior)
        x = decode(self.fuse, self.up, x, skips)
        return apply_correction(
            self._start(x, composite, base), mask, self.head(x), self.edit_margin
        )


def test_a_refiner_added_as_the_docs_say_trains_and_refines(monkeypatch, tiny_config, photo):
    monkeypatch.setitem(REFINERS, "plain", PlainRefiner)  # step 2: one registry entry
    cfg = tiny_config("model.name=plain", "model.edit_margin=4")  # a valid choice at once
    checkpoint = train(cfg) / "checkpoints" / "last.ckpt"

    refiner = Refiner.from_checkpoint(checkpoint)
    assert isinstance(refiner.model, PlainRefiner)
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:40, 24:44] = 1
    composite = photo.clone()
    composite[:, 20:40, 24:44] *= 0.8
    out = refiner(composite, mask)
    assert out.shape == composite.shape and torch.isfinite(out).all()
    far = torch.ones(64, 64, dtype=torch.bool)
    far[12:48, 16:52] = False  # beyond the model's margin and the paste's reach
    assert torch.equal(out[:, far], composite[:, far])


# --- A loss term: a PIXEL_TERMS entry and two LossConfig weights ---------------------------


def _charbonnier(objective: Objective, images: Compared) -> torch.Tensor:
    return (images.error.square() + 1e-6).sqrt().mean()


def test_a_loss_term_added_as_the_docs_say_is_weighted_warmed_up_and_in_both_spaces(
    monkeypatch,
):
    weights = [("charbonnier", float, 0.0), ("tone_charbonnier", float, 0.0)]
    loss = make_dataclass("LossConfigWithCharbonnier", weights, bases=(LossConfig,))
    schema = make_dataclass(
        "ConfigWithCharbonnier", [("loss", loss, field(default_factory=loss))], bases=(Config,)
    )
    monkeypatch.setattr(config_module, "Config", schema)  # step 1: the weights in the schema
    monkeypatch.setitem(PIXEL_TERMS, "charbonnier", _charbonnier)  # step 2: the entry
    only_it = ["loss.mse=0", "loss.charbonnier=2", "loss.tone_charbonnier=0.5"]
    cfg = load_config(
        ROOT / "configs" / "demo.yaml", [*TINY, *only_it, "loss.tone.warmup_steps=1"]
    )  # accepted: the only pixel terms with weight are the new ones
    objective = Objective(cfg)
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=g)
    pred = (target + 0.1 * torch.rand(2, 3, 32, 32, generator=g)).clamp(0, 1)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1

    first = objective.generator_terms(pred, target, mask, 0, torch.Generator().manual_seed(1))
    assert set(first.terms) == {"charbonnier", "loss"}  # the tone twin waits for its warm-up
    later = objective.generator_terms(pred, target, mask, 1, torch.Generator().manual_seed(1))
    assert set(later.terms) == {"charbonnier", "tone_charbonnier", "loss"}
    expected = 2 * later.terms["charbonnier"] + 0.5 * later.terms["tone_charbonnier"]
    assert torch.allclose(later.loss, expected)
    assert later.terms["charbonnier"] == pytest.approx(float((pred - target).abs().mean()), 1e-3)


# --- An evaluation baseline: a function and a BASELINES entry -----------------------------


def _grey_world(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scales the edit's channel means to those of the photo around it."""
    m = mask.to(composite.dtype)
    inside = (composite * m).sum((-2, -1), keepdim=True) / m.sum((-2, -1), keepdim=True)
    outside = (composite * (1 - m)).sum((-2, -1), keepdim=True) / (1 - m).sum(
        (-2, -1), keepdim=True
    )
    scaled = (composite * outside / inside.clamp_min(1e-3)).clamp(0, 1)
    return torch.where(m > 0.5, scaled, composite)


def test_a_baseline_added_as_the_docs_say_is_scored_and_counts_as_classical(monkeypatch):
    monkeypatch.setitem(BASELINES, "grey_world", _grey_world)
    methods = build_methods(["identity", "grey_world"], None)
    assert list(methods) == ["identity", "grey_world"]
    means = {
        "identity": {"band_psnr": 24.0},
        "reinhard": {"band_psnr": 25.0},
        "grey_world": {"band_psnr": 25.5},
    }
    assert best_baseline(means) == "grey_world"  # the acceptance bar is measured against it
