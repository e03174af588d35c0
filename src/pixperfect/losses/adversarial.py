"""Adversarial terms (docs/method.md §2, §4): non-saturating GAN losses with mask-aware
labels for a per-pixel / patch discriminator, lazy R1 on reals and instance noise.

The discriminator is any callable ``D(image, mask) -> logits (B, 1, h, w)`` (positive means
"real"); these functions own the labels and the reductions, not the network.

Mask-aware labels (a choice of docs/method.md §2, as LaMa's ``mask_as_fake_target``): in a
fake, only the edit region and a boundary band around it (the mask dilated by ``band`` px,
max-pooled to the logit grid) is labelled fake. The rest of the fake is the untouched
background, near pixel-identical to a real photo, so it is labelled *real* rather than
ignored: calling it fake would ask D to separate identical pixels and push G to alter the
background, while labelling it real gives D real examples in exactly the context of each
fake. Reals are real everywhere. Every term is a mean over all logit positions of the batch,
so ``DiscriminatorLoss.loss == real + fake + fake_background``.

Instance noise is drawn per sample from integer seeds (:mod:`pixperfect.losses.randomness`):
under DDP, pass ``rank`` and ``world`` and each noise draw is one draw of seeds for the global
batch, of which the rank expands its own rows, so a sample's noise does not depend on the split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from imageops.morphology import max_filter
from pixperfect.losses.randomness import hash_normal, sample_seeds

Discriminator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DiscriminatorLoss(NamedTuple):
    loss: torch.Tensor  # real + fake + fake_background, the value to minimise
    real: torch.Tensor  # reals labelled real
    fake: torch.Tensor  # the edit region + band of fakes labelled fake
    fake_background: torch.Tensor  # the rest of fakes labelled real
    real_logits: torch.Tensor  # detached, for logging
    fake_logits: torch.Tensor  # detached, for logging


def add_instance_noise(
    x: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    *,
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """x + N(0, sigma^2) noise; x itself when sigma is 0 (no random numbers drawn).

    Draws one seed per sample of the global batch of ``world * B`` (rows ``rank * B ...`` are
    x's), from the generator or else the global RNG on x's device, and expands x's seeds into
    noise on x's device with a counter-based hash: only B seeds move between devices, and a
    sample's noise depends on its seed alone, not on the rest of the batch.
    """
    if sigma <= 0:
        return x
    seeds = sample_seeds(x.shape[0], generator, rank=rank, world=world, device=x.device)
    noise = hash_normal(seeds.to(x.device), tuple(x.shape[1:]))
    return x + sigma * noise.to(x.dtype)


@torch.no_grad()
def fake_region(mask: torch.Tensor, size: tuple[int, int], band: int) -> torch.Tensor:
    """(B, 1, *size) float map, 1 where a fake's logit counts as fake, 0 where it counts real.

    mask: (B, 1, H, W), edit where > 0.5. Dilated by ``band`` px (a square structuring
    element) at image resolution, then max-pooled to the logit grid, so a logit whose patch
    touches the edit or its band is fake.
    """
    region = (mask > 0.5).float()
    if band > 0:
        region = max_filter(region, band)
    if tuple(region.shape[2:]) != tuple(size):
        region = F.adaptive_max_pool2d(region, size)
    return region


def discriminator_loss_terms(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, fake_labels: torch.Tensor
) -> DiscriminatorLoss:
    """The D loss from logits: softplus(-l) where the label is real, softplus(l) where fake."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    fake_labels = fake_labels.to(fake_logits.dtype).expand_as(fake_logits)
    real = F.softplus(-real_logits).mean()
    fake = (fake_labels * F.softplus(fake_logits)).mean()
    fake_background = ((1 - fake_labels) * F.softplus(-fake_logits)).mean()
    return DiscriminatorLoss(
        loss=real + fake + fake_background,
        real=real,
        fake=fake,
        fake_background=fake_background,
        real_logits=real_logits.detach(),
        fake_logits=fake_logits.detach(),
    )


def generator_loss_terms(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: softplus(-l), averaged over every logit of the fake.

    Background positions are included (as LaMa does): D calls them real already, so they add
    little, and their receptive fields still reach into the edit.
    """
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(
    discriminator: Discriminator,
    real: torch.Tensor,
    fake: torch.Tensor,
    mask: torch.Tensor,
    *,
    band: int = 8,
    noise_sigma: float = 0.0,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world: int = 1,
) -> DiscriminatorLoss:
    """One D step's loss. ``fake`` is detached here: the D step must not reach G. Noise on the
    reals is drawn first, then on the fakes (``rank``, ``world``: :func:`add_instance_noise`)."""
    real = add_instance_noise(real, noise_sigma, generator, rank=rank, world=world)
    fake = add_instance_noise(fake.detach(), noise_sigma, generator, rank=rank, world=world)
    real_logits = discriminator(real, mask)
    fake_logits = discriminator(fake, mask)
    labels = fake_region(mask, tuple(fake_logits.shape[2:]), band)
    return discriminator_loss_terms(real_logits, fake_logits, labels)


def generator_loss(
    discriminator: Discriminator,
    fake: torch.Tensor,
    mask: torch.Tensor,
    *,
    noise_sigma: float = 0.0,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the G step's adversarial loss, detached fake logits for logging)."""
    noisy = add_instance_noise(fake, noise_sigma, generator, rank=rank, world=world)
    fake_logits = discriminator(noisy, mask)
    return generator_loss_terms(fake_logits), fake_logits.detach()


def r1_due(d_step: int, every: int) -> bool:
    """Whether the lazy R1 penalty is computed at this discriminator step (0-based)."""
    return every > 0 and d_step % every == 0


def r1_penalty(
    discriminator: Discriminator,
    real: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    every: int = 1,
    noise_sigma: float = 0.0,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """Lazy R1: ``every * gamma / 2 * E_b ||d sum(D(x_b)) / d x_b||^2`` on reals.

    Computed only every ``every`` D steps (see :func:`r1_due`), so it is scaled by ``every`` to
    keep its average strength (StyleGAN2's lazy regularisation). The gradient is taken at the
    input D actually sees (with instance noise, if any), in float32 with autocast off, and with
    ``create_graph=True`` so the penalty trains D.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        x = add_instance_noise(
            real.detach().float(), noise_sigma, generator, rank=rank, world=world
        )
        x = x.detach().requires_grad_(True)
        logits = discriminator(x, mask.float()).float()
        # materialize_grads: a D that ignores its input has zero gradient, not an error.
        (grad,) = torch.autograd.grad(
            logits.sum(), x, create_graph=True, allow_unused=True, materialize_grads=True
        )
        penalty = grad.square().flatten(1).sum(dim=1).mean()
    return penalty * (gamma / 2) * every
