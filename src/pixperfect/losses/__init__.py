"""Loss building blocks for the refiner (docs/method.md §3, §4): pure torch, device-agnostic.

- ``tone_mapping``: the discriminative tone mapping, a per-sample polynomial tone curve that
  amplifies the current colour/tone errors about beta times before pixel losses see them.
- ``lpips``: LPIPS built only from locally staged weights (no downloads, no random weights),
  with a clear message naming any missing file and how to stage it.
- ``adversarial``: non-saturating GAN losses with mask-aware labels, lazy R1 on reals and
  instance noise, for any discriminator ``D(image, mask) -> logits``.

How the terms are weighted and combined belongs to the training module, not here.
"""

from pixperfect.losses.adversarial import (
    DiscriminatorLoss,
    add_instance_noise,
    discriminator_loss,
    discriminator_loss_terms,
    fake_region,
    generator_loss,
    generator_loss_terms,
    r1_due,
    r1_penalty,
)
from pixperfect.losses.lpips import LPIPS, LPIPSFiles, build_lpips, lpips_files
from pixperfect.losses.tone_mapping import (
    DiscriminativeToneMap,
    apply_tone_curves,
    discriminative_tone_map,
    fit_tone_curves,
    sample_betas,
)

__all__ = [
    "LPIPS",
    "DiscriminativeToneMap",
    "DiscriminatorLoss",
    "LPIPSFiles",
    "add_instance_noise",
    "apply_tone_curves",
    "build_lpips",
    "discriminative_tone_map",
    "discriminator_loss",
    "discriminator_loss_terms",
    "fake_region",
    "fit_tone_curves",
    "generator_loss",
    "generator_loss_terms",
    "lpips_files",
    "r1_due",
    "r1_penalty",
    "sample_betas",
]
