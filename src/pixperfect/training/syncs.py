"""Count host-device synchronisations, so a change that removes some can show it.

    with count_syncs(device) as syncs:
        ...  # e.g. one training step
    print(syncs.total, syncs.by_op, syncs.method)

- **CUDA**: ``torch.cuda.set_sync_debug_mode("warn")`` makes torch warn
  "called a synchronizing CUDA operation" at every synchronising call (``item()``,
  ``float()``/``bool()`` of a CUDA tensor, ``nonzero``, blocking copies to or from the GPU,
  ...); the warnings are caught and counted. Before counting, a known sync is made once to
  check that the warnings arrive (:class:`SyncCountError` otherwise: a silent detector and a
  sync-free block would look alike). torch calls the mode a prototype that does not detect
  every synchronising operation, and a sync made on an autograd worker thread (in
  ``backward`` on the GPU) may not reach Python's warnings: the count is a lower bound.
- **CPU** (nothing to synchronise with): the calls that read a tensor's values on the host,
  counted with a ``TorchDispatchMode``: ``aten._local_scalar_dense`` (``item()``,
  ``float()``, ``int()``, ``bool()`` of a tensor) and ``aten.nonzero``. Each is a sync on
  CUDA when its tensor lives on the GPU; reads of tensors that stay on the CPU there too
  (e.g. parameters drawn with a CPU generator) are counted as well, and boolean-mask
  indexing and blocking copies are not, so the CPU count is a proxy, not the CUDA count.

Blocks nest: what an inner block counts is counted by the outer one too (e.g. the
simulation's share of a step's syncs). The previous debug mode is restored on exit.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_WARNING = "called a synchronizing CUDA operation"
# aten op -> the Python calls that reach it
HOST_READS = {
    "aten._local_scalar_dense": "item/float/int/bool",
    "aten.nonzero": "nonzero",
}


_depth = 0  # count_syncs blocks open (one thread)


class SyncCountError(RuntimeError):
    """The CUDA sync detector missed a known sync: no count can be trusted."""


@dataclass
class SyncCount:
    method: str  # what was counted (cuda: set_sync_debug_mode; cpu: host reads)
    by_op: Counter = field(default_factory=Counter)  # cuda: "sync"; cpu: aten op name

    @property
    def total(self) -> int:
        return sum(self.by_op.values())


class _HostReads(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in HOST_READS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _caught_syncs(caught: list[warnings.WarningMessage]) -> int:
    # Only the exact message: the first switch into a debug mode also warns (once) that the
    # mode is a prototype, which is not a sync.
    return sum(SYNC_WARNING in str(w.message) for w in caught)


def _check_cuda_detector(device: torch.device) -> None:
    probe = torch.ones(1, device=device)
    torch.cuda.synchronize(device)
    previous = torch.cuda.get_sync_debug_mode()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            probe.item()  # a sync for certain
            torch.cuda.set_sync_debug_mode(previous)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    if _caught_syncs(caught) < 1:
        raise SyncCountError(
            "torch.cuda.set_sync_debug_mode('warn') reported no sync for tensor.item() on "
            f"{device}: the sync count would be meaningless"
        )


@contextmanager
def count_syncs(device: torch.device | str) -> Iterator[SyncCount]:
    """Count what happens inside the block: CUDA syncs on a CUDA device, host reads of
    tensor values on any other (see the module docstring). Single-threaded use only."""
    global _depth
    device = torch.device(device)
    if device.type == "cuda":
        if _depth == 0:
            _check_cuda_detector(device)
        result = SyncCount("cuda syncs (torch.cuda.set_sync_debug_mode)")
        previous = torch.cuda.get_sync_debug_mode()
        _depth += 1
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    yield result
                finally:
                    torch.cuda.set_sync_debug_mode(previous)
                    result.by_op["sync"] += _caught_syncs(caught)
        finally:
            _depth -= 1
        for w in caught:
            # Other warnings are shown as usual; syncs only to an enclosing counter.
            if _depth > 0 or SYNC_WARNING not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return
    result = SyncCount("host reads of tensor values (" + ", ".join(HOST_READS) + ")")
    _depth += 1
    try:
        with _HostReads(result.by_op):  # an enclosing mode sees every op this one passes on
            yield result
    finally:
        _depth -= 1
