"""Refiner architectures (plain ``nn.Module`` s) and the registry that builds them."""

from __future__ import annotations

from torch import nn

from pixperfect.models.unet import UNetRefiner


def build_refiner(name: str, **kwargs) -> nn.Module:
    """The refiner named in ``model.name`` with the remaining ``model`` keys as arguments."""
    registry = {"unet": UNetRefiner}
    if name not in registry:
        raise ValueError(f"unknown model.name={name!r}; available: {', '.join(registry)}")
    return registry[name](**kwargs)


__all__ = ["UNetRefiner", "build_refiner"]
