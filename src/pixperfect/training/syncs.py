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
- **CPU** (nothing to synchronise with): a proxy that sees what the device would wait for.
  The calls that read a tensor's values on the host, counted with a ``TorchDispatchMode``
  (:data:`HOST_READS`: ``item()``, ``float()``, ``int()``, ``bool()`` of a tensor,
  ``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``, ``torch.equal``,
  ``allclose``) and with ``torch.Tensor.tolist``/``numpy`` (so ``np.asarray``) patched
  while a block is open. Each is a sync on CUDA when its tensor lives on the GPU.
  CPU-side bookkeeping is counted apart, in ``host_side``, not in ``total``: the step
  counters of an optimiser that keeps them on the host (``torch.optim`` without ``fused``
  or ``capturable``: Adam reads its ``state["step"]`` with ``item()``). Reads of other
  tensors that stay on the CPU on a GPU too (parameters drawn with a CPU generator) are
  counted: the CPU count is an upper bound of those reads, not the CUDA count.
  ``copies`` counts the tensors made from host data (``torch.tensor``, ``as_tensor``,
  ``from_numpy``: ``aten.lift_fresh``), each a blocking host-to-device copy when made on
  the GPU (``self.log`` of a Python float is one); a ``.to(device)`` is invisible on a CPU.
  ``sites`` names where each read and copy was made (the innermost frame outside torch).

Blocks nest: what an inner block counts is counted by the outer one too (e.g. the
simulation's share of a step's syncs). The previous debug mode is restored on exit.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_WARNING = "called a synchronizing CUDA operation"
# aten op -> the Python calls that reach it
HOST_READS = {
    "aten._local_scalar_dense": "item/float/int/bool",
    "aten.nonzero": "nonzero",
    "aten.masked_select": "masked_select",
    "aten._unique2": "unique",
    "aten.unique_consecutive": "unique_consecutive",
    "aten.equal": "torch.equal",
    "aten.allclose": "allclose",
}
BOOLEAN_INDEX = "aten.index (boolean mask)"
# torch.Tensor methods that read values without an aten op (np.asarray goes through numpy)
READ_METHODS = ("tolist", "numpy")
MADE_FROM_HOST_DATA = "aten.lift_fresh"  # torch.tensor / as_tensor / from_numpy
_TORCH_DIR = os.path.dirname(torch.__file__)


_depth = 0  # count_syncs blocks open (one thread)


class SyncCountError(RuntimeError):
    """The CUDA sync detector missed a known sync: no count can be trusted."""


@dataclass
class SyncCount:
    method: str  # what was counted (cuda: set_sync_debug_mode; cpu: host reads)
    by_op: Counter = field(default_factory=Counter)  # cuda: "sync"; cpu: aten op name
    # cpu only: host-side bookkeeping reads (not in total), tensors made from host data,
    # and "file:line" -> reads and copies made there
    host_side: Counter = field(default_factory=Counter)
    copies: int = 0
    sites: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())


def _site() -> str:
    """The innermost frame outside torch (and this file): where a read was asked for."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_TORCH_DIR) and name != __file__:
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _is_boolean_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


_active: list[_HostReads] = []  # open CPU blocks, innermost last
_stepping: list[torch.optim.Optimizer] = []  # optimisers inside step() now
_patched: dict[str, Callable] = {}


def _host_side(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` keeps its step counters on the host (not fused, not capturable:
    then the counters live on the device and nothing reads them)."""
    return not (optimizer.defaults.get("fused") or optimizer.defaults.get("capturable"))


def _host_side_optimizer() -> bool:
    """Whether the innermost optimiser stepping now keeps its counters on the host."""
    return bool(_stepping) and _host_side(_stepping[-1])


def _host_counter(tensor: object) -> bool:
    """Whether ``tensor`` is the host-side step counter of an optimiser stepping now."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 0:
        return False
    return any(
        _host_side(optimizer) and any(s.get("step") is tensor for s in optimizer.state.values())
        for optimizer in _stepping
    )


class _HostReads(TorchDispatchMode):
    def __init__(self, result: SyncCount) -> None:
        super().__init__()
        self.result = result

    def record(self, name: str, tensor: object) -> None:
        if _host_counter(tensor):
            self.result.host_side[name] += 1
            return
        self.result.by_op[name] += 1
        self.result.sites[_site()] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in HOST_READS:
            self.record(name, args[0] if args else None)
        elif name == "aten.index" and _is_boolean_index(args):
            self.record(BOOLEAN_INDEX, args[0])
        elif name == MADE_FROM_HOST_DATA and _host_side_optimizer():
            # foreach Adam adds torch.tensor(1.0) to its host-side step counters
            self.result.host_side[name] += 1
        elif name == MADE_FROM_HOST_DATA:
            self.result.copies += 1
            self.result.sites[_site()] += 1
        return func(*args, **(kwargs or {}))


def _reading(name: str, original: Callable) -> Callable:
    def read(self, *args, **kwargs):
        for block in _active:
            block.record(f"Tensor.{name}", self)
        return original(self, *args, **kwargs)

    return read


@contextmanager
def _cpu_probes() -> Iterator[None]:
    """Tensor.tolist/numpy counted and the optimisers' steps followed, while blocks are open."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    for name in READ_METHODS:
        _patched[name] = getattr(torch.Tensor, name)
        setattr(torch.Tensor, name, _reading(name, _patched[name]))
    hooks = [
        register_optimizer_step_pre_hook(lambda opt, args, kwargs: _stepping.append(opt)),
        register_optimizer_step_post_hook(lambda opt, args, kwargs: _stepping.pop()),
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for name, original in _patched.items():
            setattr(torch.Tensor, name, original)
        _patched.clear()
        _stepping.clear()


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
    mode = _HostReads(result)
    _depth += 1
    try:
        with _cpu_probes() if not _active else _nothing():
            _active.append(mode)
            try:
                with mode:  # an enclosing mode sees every op this one passes on
                    yield result
            finally:
                _active.remove(mode)
    finally:
        _depth -= 1


@contextmanager
def _nothing() -> Iterator[None]:
    yield
