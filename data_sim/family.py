"""The interface every artifact family implements, so the simulator can treat them alike.

A family is one kind of flaw an editor leaves in its output (a colour drift, a displaced
paste, a texture mismatch, broken content at the seam). It has a config section in
:class:`data_sim.simulator.SimConfig` and a subclass of :class:`Family` in its own module:

* ``sample(batch_size, height, width, generator) -> params``: every random choice, drawn on
  the CPU from an explicit generator, one entry per sample (leading dimension
  ``batch_size``), with a bool ``applied`` saying which samples get the artifact;
* ``apply(images, params, mask, *, inplace)``: the deterministic part, on the edited content
  (``mask`` is the edit mask, (B, 1, H, W) in {0, 1}); samples not ``applied`` come back
  bit-exactly unchanged;
* ``outside(images, params, *, inplace)``: what the family does to the user's own photo,
  where the edit is not pasted (unchanged by default);
* ``describe(params, index)`` and ``labels(params, index)``: the sample's artifact in words,
  and the names reports group it under, from the parameters alone (stored parameters are
  described without building a simulator).

Images are float32 ``(B, 3, H, W)`` in [0, 1], masks float32 ``(B, 1, H, W)`` in {0, 1}
with 1 = edited. ``inplace=True`` writes into ``images`` instead of a copy: the simulator
passes tensors it owns, because on a CPU a fresh full-batch tensor costs page faults worth
as much as the arithmetic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

import torch

from data_sim.sampling import applied_indices

Params = dict[str, torch.Tensor]
Config = TypeVar("Config")


class Family(ABC, Generic[Config]):
    """Base class of the artifact families; see the module docstring for the contract."""

    key: ClassVar[str]  # its section of SimConfig and its entry in the drawn parameters

    def __init__(self, cfg: Config) -> None:
        cfg.validate()  # type: ignore[attr-defined]
        self.cfg = cfg

    @abstractmethod
    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params: ...

    @abstractmethod
    def apply(
        self, images: torch.Tensor, params: Params, mask: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor: ...

    def outside(
        self, images: torch.Tensor, params: Params, *, inplace: bool = False
    ) -> torch.Tensor:
        """The user's photo where the edit is not pasted: unchanged, unless overridden."""
        return images if inplace else images.clone()

    @classmethod
    @abstractmethod
    def describe(cls, params: Params, index: int) -> str:
        """The applied artifact of sample ``index`` in a few words."""

    @classmethod
    def labels(cls, params: Params, index: int) -> list[str]:
        """The report names sample ``index`` counts under: the family's key when applied."""
        return [cls.key] if bool(params["applied"][index]) else []


def applied_output(
    images: torch.Tensor, params: Params, *, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, idx)``: the tensor a family writes its result into (``images`` itself with
    ``inplace``, else a copy) and the CPU indices of the applied samples. Families compute
    only these (a batched gather, not a loop), so their cost follows their probability."""
    return (images if inplace else images.clone()), applied_indices(params)
