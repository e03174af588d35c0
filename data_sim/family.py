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
* optionally ``plan(params, height, width)`` and ``run(images, params, plan, mask, *,
  inplace)`` / ``run_outside(images, params, plan, *, inplace)``: the same work split in
  two (:class:`PlannedFamily`). ``plan`` runs on the CPU and takes every decision that reads
  a parameter's value (which samples, kernel sizes, loop counts), returning the tensors the
  device needs; the simulator moves the plans of all families in one copy
  (:func:`data_sim.transfer.to_device`) and ``run`` then works on the device without a host
  read or another copy. A family without a plan is run through ``apply`` / ``outside``;
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
from typing import Any, ClassVar, Generic, TypeVar

import torch

from data_sim.sampling import applied_indices
from data_sim.transfer import to_device

Params = dict[str, torch.Tensor]  # one family's (or the mask's) draws for a batch, by name
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

    def plan(self, params: Params, height: int, width: int) -> Any:
        """The CPU-side part of the family's work (see :class:`PlannedFamily`); None: the
        family has no plan, and :meth:`run` / :meth:`run_outside` call ``apply`` /
        ``outside`` (which may then read values and copy on their own)."""
        return None

    def run(
        self, images: torch.Tensor, params: Params, plan: Any, mask: torch.Tensor, *,
        inplace: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The device-side part of :meth:`apply`, given :meth:`plan`'s output on the device."""
        return self.apply(images, params, mask, inplace=inplace)

    def run_outside(
        self, images: torch.Tensor, params: Params, plan: Any, *, inplace: bool = False
    ) -> torch.Tensor:
        """The device-side part of :meth:`outside`, given :meth:`plan`'s output on the device."""
        return self.outside(images, params, inplace=inplace)

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


class PlannedFamily(Family[Config]):
    """A family whose host decisions are all made in :meth:`plan` (CPU) and whose pixels
    are all made in :meth:`run` / :meth:`run_outside` (the images' device, no host read): on
    a GPU, a host read waits for every kernel queued before it, and each copy of a CPU
    tensor to the device is a blocking transfer. ``apply`` and ``outside`` are the two parts
    joined, with the plan moved in one copy."""

    @abstractmethod
    def plan(self, params: Params, height: int, width: int) -> Any: ...

    @abstractmethod
    def run(
        self, images: torch.Tensor, params: Params, plan: Any, mask: torch.Tensor, *,
        inplace: bool = False,
    ) -> torch.Tensor: ...  # fmt: skip

    def run_outside(
        self, images: torch.Tensor, params: Params, plan: Any, *, inplace: bool = False
    ) -> torch.Tensor:
        return images if inplace else images.clone()

    def _moved_plan(self, images: torch.Tensor, params: Params) -> Any:
        return to_device(self.plan(params, *images.shape[-2:]), images.device)

    def apply(
        self, images: torch.Tensor, params: Params, mask: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        plan = self._moved_plan(images, params)
        return self.run(images, params, plan, mask, inplace=inplace)

    def outside(
        self, images: torch.Tensor, params: Params, *, inplace: bool = False
    ) -> torch.Tensor:
        plan = self._moved_plan(images, params)
        return self.run_outside(images, params, plan, inplace=inplace)
