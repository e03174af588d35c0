"""Refiner and discriminator architectures (plain ``nn.Module`` s) and their registries."""

from __future__ import annotations

import inspect

from torch import nn

from pixperfect.errors import ConfigError
from pixperfect.models.discriminator import DISCRIMINATORS, PatchDiscriminator, build_discriminator
from pixperfect.models.ffc import FFCRefiner
from pixperfect.models.resunet import ResUNetRefiner
from pixperfect.models.unet import UNetRefiner

# ``model.name`` -> architecture; the config's allowed names are these keys.
REFINERS: dict[str, type[nn.Module]] = {
    "unet": UNetRefiner,
    "resunet": ResUNetRefiner,
    "ffc": FFCRefiner,
}


def build_refiner(name: str, **kwargs) -> nn.Module:
    """The refiner named in ``model.name`` with the remaining ``model`` keys as arguments.

    unet: UNetRefiner(base_channels=24, depth=3, edit_margin=-1, colour_prior="none"), CPU-sized.
    resunet: ResUNetRefiner(..., blocks=1, colour_field=False): the U-Net with residual,
         GroupNorm levels whose every level trains, optionally a per-pixel colour map.
    ffc: FFCRefiner(base_channels=64, depth=3, edit_margin=-1, ffc_blocks=12,
         global_ratio=0.75), paper-scale (about 40M parameters), global receptive field.
    """
    if name not in REFINERS:
        raise ConfigError(f"unknown model.name={name!r}; available: {', '.join(REFINERS)}")
    # The config's model section holds every architecture's keys (validated there): each
    # refiner takes the ones it knows; None (e.g. model.base_channels=null) means its default.
    accepted = inspect.signature(REFINERS[name]).parameters
    return REFINERS[name](**{k: v for k, v in kwargs.items() if k in accepted and v is not None})


__all__ = [
    "DISCRIMINATORS",
    "REFINERS",
    "FFCRefiner",
    "PatchDiscriminator",
    "ResUNetRefiner",
    "UNetRefiner",
    "build_discriminator",
    "build_refiner",
]
