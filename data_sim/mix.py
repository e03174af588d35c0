"""The training mix: how many edits are nearly right, and how many are not edited at all.

A refiner trained only on visible seams learns to change every edit it sees, and harms the
ones that were already (nearly) right. The mix puts both kinds in the training data:

- ``nearly_right_p``: the edit's difference from the photo is scaled down by a per-sample
  ``strength`` drawn from ``nearly_right_strength`` (e.g. 0.1-0.35 of the drawn artifact):
  the same families, faint;
- ``clean_p``: no artifact family at all: the composite is the photo (its own grain and JPEG
  included), and the refiner must return it unchanged.

Both are off by default (the default recipe is what evaluation scores); training configs set
them. Evaluation (``ensure_artifact``) never uses the mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data_sim.errors import SimConfigError
from data_sim.sampling import bernoulli, check_range, uniform
from data_sim.transfer import to_device

NORMAL, NEARLY_RIGHT, CLEAN = 0, 1, 2


@dataclass
class MixConfig:
    nearly_right_p: float = 0.0  # share of samples with a faint version of their artifacts
    nearly_right_strength: tuple[float, float] = (0.1, 0.35)  # of the drawn edit's difference
    clean_p: float = 0.0  # share of samples with no artifact at all (taken first)

    def validate(self, name: str = "sim.mix") -> None:
        check_range(f"{name}.nearly_right_p", (self.nearly_right_p,) * 2, 0, 1)
        check_range(f"{name}.clean_p", (self.clean_p,) * 2, 0, 1)
        check_range(f"{name}.nearly_right_strength", self.nearly_right_strength, 0, 1)
        if self.nearly_right_p + self.clean_p > 1:
            raise SimConfigError(
                f"{name}.nearly_right_p + {name}.clean_p = "
                f"{self.nearly_right_p + self.clean_p:g} must be <= 1"
            )


def sample_mix_params(
    batch_size: int, cfg: MixConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Per sample: ``kind`` (NORMAL, NEARLY_RIGHT, CLEAN) and ``strength`` (1 unless
    nearly right). Drawn after every family, so the mix's settings never change what the
    families draw."""
    clean = bernoulli(generator, batch_size, cfg.clean_p)
    # Among the rest, nearly right with the probability that makes its overall share p.
    rest = 1 - cfg.clean_p
    nearly = bernoulli(generator, batch_size, cfg.nearly_right_p / rest if rest > 0 else 0.0)
    nearly &= ~clean
    strength = uniform(generator, batch_size, *cfg.nearly_right_strength)
    kind = torch.full((batch_size,), NORMAL, dtype=torch.int64)
    kind[nearly] = NEARLY_RIGHT
    kind[clean] = CLEAN
    return {"kind": kind, "strength": torch.where(nearly, strength, torch.ones_like(strength))}


def switch_off_families(params: dict[str, dict[str, torch.Tensor]]) -> None:
    """Clean samples: no family applies (in place on the drawn parameters)."""
    clean = params["mix"]["kind"] == CLEAN
    for family in params.values():
        if "applied" in family:
            family["applied"] = family["applied"] & ~clean


def plan_mix(params: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The CPU-side part of :func:`scale_edits_`: the per-sample strengths, or None when
    every sample keeps its full edit (decided on the host, from the drawn values)."""
    if bool((params["strength"] < 1).any()):
        return params["strength"]
    return None


def run_mix(
    edited: torch.Tensor, target: torch.Tensor, strength: torch.Tensor | None
) -> torch.Tensor:
    """The device part of :func:`scale_edits_` (``strength`` from :func:`plan_mix`, on the
    images' device): no host read."""
    if strength is not None:
        edited.sub_(target).mul_(strength.to(edited.dtype).view(-1, 1, 1, 1)).add_(target)
    return edited


def scale_edits_(
    edited: torch.Tensor, target: torch.Tensor, params: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``target + strength * (edited - target)`` per sample, in place on ``edited``."""
    return run_mix(edited, target, to_device(plan_mix(params), edited.device))


def is_clean(params: dict[str, dict[str, torch.Tensor]], index: int) -> bool:
    """Is sample ``index`` a clean one? (Parameters put together by hand may have no mix.)"""
    mix = params.get("mix")
    return mix is not None and int(mix["kind"][index]) == CLEAN


def describe_mix(params: dict[str, dict[str, torch.Tensor]], index: int) -> str | None:
    """``nearly right x<strength>`` for a nearly-right sample, else None."""
    mix = params.get("mix")
    if mix is None or int(mix["kind"][index]) != NEARLY_RIGHT:
        return None
    return f"nearly right x{float(mix['strength'][index]):.2f}"
