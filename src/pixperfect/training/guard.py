"""The non-finite guard without a host read: a step whose loss is not finite on any rank
leaves the weights and the optimiser's moments as they were, on every rank, decided on the
device (the step must not wait on the host: docs/training.md, "What a run writes").

- :func:`nonfinite_anywhere`: 1 where ``value`` has a non-finite element on any rank, else
  0, as a device tensor: the ranks' flags are summed by an all-reduce (a collective all
  ranks reach at the same point; asynchronous to the host on NCCL) and nothing is read.
- :func:`masked_step`: the optimiser steps, and where the flag is 1 the step is undone on
  the device: Adam's fused kernel skips it itself (``found_inf``, as under a GradScaler,
  step counters included); any other optimiser's parameters and floating-point state are
  put back from a copy taken before the step (``torch.where``: a NaN in the discarded
  update never reaches the weights), new state (the first step) back to zeros.

The policy, and what it changes: the update is never applied, but the host does not know
at the time. So the optimiser's ``step()`` is called on a skipped step too: Lightning's
``global_step`` and ``trainer.max_steps`` count batches stepped or skipped, and a
host-side step counter (Adam without ``fused``/``capturable``) advances by one per skip,
which shifts the bias correction of later steps by one step (negligible after a few
hundred steps). The skips are counted on the device and reported (``train/skipped_steps``
and a message naming the network) on the next logging step, when the host reads anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def nonfinite_anywhere(value: torch.Tensor, strategy) -> torch.Tensor:
    """1.0 where ``value`` has a non-finite element on any rank, else 0.0: a 0-dim float
    tensor on ``value``'s device (``strategy``: Lightning's, whose ``reduce`` all-reduces
    under DDP and returns the tensor in one process). No host read."""
    bad = (~torch.isfinite(value.detach())).any().float()
    return strategy.reduce(bad, reduce_op="sum").clamp(max=1.0)


def _inner(optimizer) -> torch.optim.Optimizer:
    """The torch optimiser behind Lightning's ``LightningOptimizer`` wrapper (or itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    return bool(optimizer.defaults.get("fused")) and isinstance(
        optimizer, torch.optim.Adam | torch.optim.AdamW
    )


@torch.no_grad()
def masked_step(optimizer, skip: torch.Tensor, step: Callable[[], object] | None = None) -> None:
    """``step()`` (default: ``optimizer.step()``), undone on the device where ``skip`` (a
    0-dim 0/1 tensor on the parameters' device) is 1; see the module docstring."""
    inner = _inner(optimizer)
    step = step or optimizer.step
    if _fused(inner):
        inner.found_inf = skip.float()
        try:
            step()
        finally:
            del inner.found_inf
        return
    params = [p for group in inner.param_groups for p in group["params"]]
    before = {
        id(p): (
            p.detach().clone(),
            {k: v.clone() for k, v in inner.state.get(p, {}).items() if _restorable(k, v)},
        )
        for p in params
    }
    step()
    keep = skip.to(torch.bool)
    for p in params:
        weights, state = before[id(p)]
        p.copy_(torch.where(keep, weights, p))
        for key, value in inner.state.get(p, {}).items():
            if not _restorable(key, value):
                continue
            old = state.get(key)
            value.copy_(torch.where(keep, old if old is not None else 0, value))


def _restorable(key: str, value: object) -> bool:
    """Optimiser state put back on a skip: floating-point tensors (moments), not the host
    step counters (``step`` on the host: its read would be a sync on a GPU)."""
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not (key == "step" and value.dim() == 0)
    )


class SkipLedger:
    """The skipped steps of each network, counted on the device (no read) and reported on
    the next logging step: one read of both counts, a message per network that skipped."""

    KINDS = ("generator", "discriminator")

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None
        self.reported = [0] * len(self.KINDS)

    def add(self, kind: str, skip: torch.Tensor) -> None:
        if self.counts is None or self.counts.device != skip.device:
            self.counts = torch.zeros(len(self.KINDS), device=skip.device)
        self.counts[self.KINDS.index(kind)] += skip

    def report(self, step: int, counts: list[float] | None = None) -> list[str]:
        """The messages for the skips since the last report, from ``counts`` (the counts
        already read, with the step's other scalars) or else read here: call on logging
        steps only."""
        if counts is None:
            if self.counts is None:
                return []
            counts = self.counts.tolist()
        counts = [int(c) for c in counts]
        messages = [
            f"step {step}: non-finite {kind} loss, step skipped"
            + (f" ({now - before} times since the last log)" if now - before > 1 else "")
            for kind, now, before in zip(self.KINDS, counts, self.reported, strict=True)
            if now > before
        ]
        self.reported = counts
        return messages
