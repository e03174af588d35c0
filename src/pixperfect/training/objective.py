"""The refiner's objective (METHOD sections 3 and 4): which loss terms exist, their weights,
their warm-ups, and how they add up. The terms themselves live in ``pixperfect.losses``.

Terms come in two spaces: RGB (``l1``, ``mse``, ``lpips``, ``adversarial``) and the
discriminative space (``tone_*``: the same terms between the tone-mapped prediction and
target). A term with weight 0 is never computed; LPIPS is built only when some LPIPS term
has weight; ``loss.lpips_missing=skip`` drops the LPIPS terms when their weights are absent
(said at start and logged), ``error`` refuses with the missing file named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from pixperfect.losses import build_lpips, discriminative_tone_map, generator_loss

log = logging.getLogger(__name__)

PIXEL_TERMS = ("l1", "mse", "lpips")


class Objective:
    """Generator loss terms for one step. Not an ``nn.Module``: it holds no trainable
    state, and LPIPS (frozen) must stay out of optimisers, EMA and checkpoints."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg.loss
        self.gan = cfg.gan
        self.weights = {
            f"{prefix}{name}": float(self.cfg[f"{prefix}{name}"])
            for prefix in ("", "tone_")
            for name in (*PIXEL_TERMS, "adversarial")
        }
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

    def to(self, device: torch.device) -> Objective:
        if self.lpips is not None:
            self.lpips.to(device)
        return self

    def _pixel_terms(
        self, prefix: str, pred: torch.Tensor, target: torch.Tensor, active: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        terms = {}
        error = pred.float() - target.float()
        if f"{prefix}l1" in active:
            terms[f"{prefix}l1"] = error.abs().mean()
        if f"{prefix}mse" in active:
            terms[f"{prefix}mse"] = error.square().mean()
        if f"{prefix}lpips" in active:
            terms[f"{prefix}lpips"] = self.lpips(pred, target).mean()
        return terms

    def generator_terms(
        self,
        refined: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        step: int,
        generator: torch.Generator,
        discriminator: Callable | None = None,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(loss terms by name plus their weighted float32 sum ``loss``, extras to log:
        fake logits, and the tone-mapped images when that space is active).

        Under DDP, ``rank`` and ``world`` (with a ``generator`` seeded the same on every rank)
        make each random draw one for the global batch, of which this rank keeps its rows."""
        active = self.active(step)
        terms = self._pixel_terms("", refined, target, active)
        extras: dict[str, torch.Tensor] = {}
        noise = self.gan.instance_noise
        shard = {"rank": rank, "world": world}
        if "adversarial" in active and discriminator is not None:
            terms["adversarial"], logits = generator_loss(
                discriminator, refined, mask, noise_sigma=noise, generator=generator, **shard
            )
            extras["fake_logits"] = logits
        if any(name.startswith("tone_") for name in active):
            c = self.cfg.tone
            # Fit and mapping in float32/64 whatever precision the networks run in.
            with torch.autocast(refined.device.type, enabled=False):
                mapped_pred, mapped_gt = discriminative_tone_map(
                    refined.float(),
                    target.float(),
                    mask.float(),
                    generator,
                    beta_range=tuple(c.beta),
                    degree=c.degree,
                    samples_per_region=c.samples_per_region,
                    **shard,
                )
            extras["tone_pred"], extras["tone_target"] = mapped_pred.detach(), mapped_gt
            terms.update(self._pixel_terms("tone_", mapped_pred, mapped_gt, active))
            if "tone_adversarial" in active and discriminator is not None:
                terms["tone_adversarial"], _ = generator_loss(
                    discriminator,
                    mapped_pred,
                    mask,
                    noise_sigma=noise,
                    generator=generator,
                    **shard,
                )
        # The sum in float32 whatever the networks ran in (bf16 autocast).
        terms["loss"] = sum(active[name] * value.float() for name, value in terms.items())
        return terms, extras
