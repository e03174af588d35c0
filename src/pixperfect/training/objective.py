"""The refiner's objective (docs/method.md §3, §4): which loss terms exist, their weights,
their warm-ups, and how they add up, for both networks. The terms themselves live in
``pixperfect.losses``; the module that steps the optimisers lives in ``training.module``.

Both sides live here (as LaMa's ``generator_loss``/``discriminator_loss`` pair) so that the
training step, the benchmark and the tests run one definition of the loss: the generator's
terms (:meth:`Objective.generator_terms`) and the discriminator's (RGB and tone-space D terms
and lazy R1, :meth:`Objective.discriminator_terms`), each returning a typed result.

Terms come in two spaces: RGB (``l1``, ``mse``, ``lpips``, ``adversarial``) and the
discriminative space (``tone_*``: the same terms between the tone-mapped prediction and
target). A term with weight 0 is never computed; LPIPS is built only when some LPIPS term
has weight; ``loss.lpips_missing=skip`` drops the LPIPS terms when their weights are absent
(said at start and logged), ``error`` refuses with the missing file named.

Random draws (tone-curve fits, instance noise) come from one generator per step, in a fixed
order on every rank: G's adversarial noise on the fake, the tone map, G's tone-space
adversarial noise, then D's real, fake, tone-mapped real, tone-mapped fake and R1's real.
Under DDP, ``rank`` and ``world`` make each draw one for the global batch, of which this rank
keeps its rows (:mod:`pixperfect.losses.randomness`), so the gradients do not depend on how
the batch is split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import kornia
import torch
from omegaconf import DictConfig

from pixperfect.config_schema import TONE_PREFIX, loss_weights
from pixperfect.losses import (
    DiscriminatorLoss,
    build_lpips,
    discriminative_tone_map,
    discriminator_loss,
    generator_loss,
    r1_due,
    r1_penalty,
)
from pixperfect.losses.adversarial import Discriminator

log = logging.getLogger(__name__)


@dataclass
class Compared:
    """A prediction and its target as the pixel terms see them; their float32 difference is
    computed once, for every term that uses it (one node in the graph, one gradient)."""

    pred: torch.Tensor
    target: torch.Tensor

    @cached_property
    def error(self) -> torch.Tensor:
        return self.pred.float() - self.target.float()


PixelTerm = Callable[["Objective", Compared], torch.Tensor]


def _l1(objective: Objective, images: Compared) -> torch.Tensor:
    return images.error.abs().mean()


def _mse(objective: Objective, images: Compared) -> torch.Tensor:
    return images.error.square().mean()


PYRAMID_LEVELS = 4  # full resolution and three Gaussian pyramid levels below it


def _pyramid_l1(objective: Objective, images: Compared) -> torch.Tensor:
    """L1 of the error averaged over a Gaussian pyramid (full size, 1/2, 1/4, 1/8): a smooth
    colour error keeps its size at every level while texture and noise errors average out
    below full size, so colour weighs about as much as the levels (per-pixel L1 gives it
    little gradient where texture error dominates)."""
    error, total = images.error, images.error.abs().mean()
    for _ in range(PYRAMID_LEVELS - 1):
        error = kornia.geometry.transform.pyrdown(error)
        total = total + error.abs().mean()
    return total / PYRAMID_LEVELS


def _psnr(objective: Objective, images: Compared) -> torch.Tensor:
    """Minus the PSNR (dB) per sample, averaged: ``10 log10(MSE_i + floor)``. A mean MSE or
    L1 is ruled by the worst samples, so a nearly right edit (band PSNR 40 dB) weighs nothing
    and the corrections learned on the bad ones leak into it: harm. In log scale a dB gained
    or lost counts the same on every sample, the way the band-PSNR gain and the harm rate
    score it. The floor (``loss.psnr_floor_db``) is where a sample counts as right: without
    it an untouched edit's last 0.1 level would outweigh a bad edit's whole error."""
    floor = 10 ** (-objective.cfg.psnr_floor_db / 10)
    mse = images.error.square().flatten(1).mean(1)
    return 10 * torch.log10(mse + floor).mean()


def _lpips(objective: Objective, images: Compared) -> torch.Tensor:
    return objective.lpips(images.pred, images.target).mean()


# The terms that compare the prediction with the target, by their config name: each runs in
# RGB and, as ``tone_<name>``, between the tone-mapped images. A new one is an entry here and
# its two weights in LossConfig (docs/extending.md).
PIXEL_TERMS: dict[str, PixelTerm] = {
    "l1": _l1,
    "mse": _mse,
    "pyramid_l1": _pyramid_l1,
    "psnr": _psnr,
    "lpips": _lpips,
}


@dataclass(frozen=True)
class ToneImages:
    """The step's tone-mapped prediction (detached: D's fake) and target (D's real), made on
    the generator side and judged again on the discriminator side of the same step."""

    pred: torch.Tensor
    target: torch.Tensor


@dataclass(frozen=True)
class GeneratorTerms:
    """The generator side of one step: what the module backpropagates, logs and hands to the
    discriminator side."""

    terms: dict[str, torch.Tensor]  # each computed term by name, and ``loss``: their sum
    fake_logits: torch.Tensor | None = None  # D's logits on the fake (detached), for logging
    tone: ToneImages | None = None  # when a tone-space term is active at this step

    @property
    def loss(self) -> torch.Tensor:
        """The weighted float32 sum of the terms: the value to minimise."""
        return self.terms["loss"]


@dataclass(frozen=True)
class DiscriminatorTerms:
    """The discriminator side of one step: its loss and the parts the module logs."""

    loss: torch.Tensor  # float32: RGB D loss + tone-space D loss + R1, the value to minimise
    rgb: DiscriminatorLoss  # reals vs fakes in RGB, with their logits
    tone: DiscriminatorLoss | None = None  # tone-mapped reals vs fakes, when that term counts
    r1: torch.Tensor | None = None  # lazy R1 on reals, on the D steps it is due


class Objective:
    """Loss terms of both networks for one step. Not an ``nn.Module``: it holds no trainable
    state, and LPIPS (frozen) must stay out of optimisers, EMA and checkpoints."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg.loss
        self.gan = cfg.gan
        # The terms are the weights LossConfig names; each image-comparing one has a function
        # in PIXEL_TERMS under its name (tone_<name>: the same one, on the tone-mapped images).
        self.weights = {name: float(w) for name, w in loss_weights(self.cfg).items()}
        pixel = [n for n in self.weights if not n.endswith("adversarial")]
        unknown = [n for n in pixel if n.removeprefix(TONE_PREFIX) not in PIXEL_TERMS]
        if unknown:
            raise KeyError(
                f"{', '.join(f'loss.{n}' for n in unknown)} has no function in PIXEL_TERMS "
                "(training/objective.py); add one as docs/extending.md says"
            )
        self.lpips = None
        self.lpips_disabled = False
        if self.weights["lpips"] or self.weights["tone_lpips"]:
            self.lpips = build_lpips(
                self.cfg.lpips_net, self.cfg.lpips_weights, on_missing=self.cfg.lpips_missing
            )
            if self.lpips is None:  # skip mode: said here, and logged by the module
                self.lpips_disabled = True
                self.weights["lpips"] = self.weights["tone_lpips"] = 0.0
                log.warning("LPIPS weights are missing: training WITHOUT the LPIPS terms")

    @property
    def adversarial(self) -> bool:
        """Whether some adversarial term has weight, so a discriminator is needed at all."""
        return bool(self.weights["adversarial"] or self.weights["tone_adversarial"])

    def active(self, step: int) -> dict[str, float]:
        """Weights of the terms that count at generator step ``step`` (warm-ups applied)."""
        active = {}
        for name, weight in self.weights.items():
            if not weight:
                continue
            if name.startswith("tone_") and step < self.cfg.tone.warmup_steps:
                continue
            if name.endswith("adversarial") and step < self.gan.warmup_steps:
                continue
            active[name] = weight
        return active

    def trains_discriminator(self, step: int) -> bool:
        """Whether generator step ``step`` is followed by a discriminator step: D learns only
        once the adversarial terms count, so its step count follows G's past the warm-up."""
        return self.adversarial and step >= self.gan.warmup_steps

    def to(self, device: torch.device) -> Objective:
        """Moves LPIPS, the only network the objective owns, to ``device``."""
        if self.lpips is not None:
            self.lpips.to(device)
        return self

    def _pixel_terms(
        self, prefix: str, pred: torch.Tensor, target: torch.Tensor, active: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        images = Compared(pred, target)
        return {
            prefix + name: term(self, images)
            for name, term in PIXEL_TERMS.items()
            if prefix + name in active
        }

    def tone_map(
        self,
        refined: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator,
        **shard: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tone-mapped prediction, tone-mapped target): the discriminative space, fitted
        with the step's ``generator`` (``shard``: rank, world). A method of its own so that
        the benchmark can time it inside the real step."""
        c = self.cfg.tone
        # Fit and mapping in float32/64 whatever precision the networks run in.
        with torch.autocast(refined.device.type, enabled=False):
            return discriminative_tone_map(
                refined.float(),
                target.float(),
                mask.float(),
                generator,
                beta_range=tuple(c.beta),
                degree=c.degree,
                samples_per_region=c.samples_per_region,
                **shard,
            )

    def generator_terms(
        self,
        refined: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        step: int,
        generator: torch.Generator,
        discriminator: Discriminator | None = None,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> GeneratorTerms:
        """The terms active at ``step``, their weighted sum, and what the discriminator side
        and the logs need (fake logits, tone-mapped images).

        Under DDP, ``rank`` and ``world`` (with a ``generator`` seeded the same on every rank)
        make each random draw one for the global batch, of which this rank keeps its rows."""
        active = self.active(step)
        terms = self._pixel_terms("", refined, target, active)
        shard = {"rank": rank, "world": world}
        noise = {"noise_sigma": self.gan.instance_noise, "generator": generator}
        fake_logits = tone = None
        if "adversarial" in active and discriminator is not None:
            terms["adversarial"], fake_logits = generator_loss(
                discriminator, refined, mask, **noise, **shard
            )
        if any(name.startswith("tone_") for name in active):
            mapped_pred, mapped_gt = self.tone_map(refined, target, mask, generator, **shard)
            tone = ToneImages(pred=mapped_pred.detach(), target=mapped_gt)
            terms.update(self._pixel_terms("tone_", mapped_pred, mapped_gt, active))
            if "tone_adversarial" in active and discriminator is not None:
                terms["tone_adversarial"], _ = generator_loss(
                    discriminator, mapped_pred, mask, **noise, **shard
                )
        # The sum in float32 whatever the networks ran in (bf16 autocast).
        terms["loss"] = sum(active[name] * value.float() for name, value in terms.items())
        return GeneratorTerms(terms=terms, fake_logits=fake_logits, tone=tone)

    def discriminator_terms(
        self,
        discriminator: Discriminator,
        real: torch.Tensor,
        fake: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator,
        *,
        tone: ToneImages | None = None,
        d_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> DiscriminatorTerms:
        """D's loss at its step ``d_step`` (0-based; R1 is lazy): reals vs the detached
        ``fake`` in RGB, the generator side's ``tone`` images when the tone-space adversarial
        term has weight (one D for both spaces), and R1 on the reals when due.

        Called after :meth:`generator_terms` with the same ``generator``: its noise draws
        continue the step's sequence, in the same order on every rank."""
        g = self.gan
        noise = {
            "noise_sigma": g.instance_noise,
            "generator": generator,
            "rank": rank,
            "world": world,
        }
        rgb = discriminator_loss(discriminator, real, fake, mask, band=g.band, **noise)
        loss = rgb.loss.float()
        tone_loss = r1 = None
        if self.weights["tone_adversarial"] and tone is not None:
            # One discriminator for both spaces: it also learns tone-mapped reals and fakes.
            tone_loss = discriminator_loss(
                discriminator, tone.target, tone.pred, mask, band=g.band, **noise
            )
            loss = loss + tone_loss.loss.float()
        if r1_due(d_step, g.r1_every) and g.r1_gamma > 0:
            r1 = r1_penalty(discriminator, real, mask, gamma=g.r1_gamma, every=g.r1_every, **noise)
            loss = loss + r1
        return DiscriminatorTerms(loss=loss, rgb=rgb, tone=tone_loss, r1=r1)
