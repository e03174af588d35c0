"""One host-to-device copy for everything a simulated batch needs from the CPU.

The simulation draws its parameters on the CPU (:mod:`data_sim.sampling`), and every
decision that depends on their values (which samples a family touches, kernel sizes, loop
counts) is taken there too, in each family's ``plan``. What the device then needs (the
applied samples' parameters, their row indices, small constant tables) goes over in one copy:
on a GPU each separate ``.to(device)`` of a pageable CPU tensor is a blocking copy of its own,
and a batch used to make about a hundred of them.

:func:`to_device` packs every CPU tensor of a nested structure (dicts, lists, tuples) into one
byte buffer, moves it, and gives back the same structure holding views of the moved buffer.
On the CPU (or when nothing needs moving) it returns its input unchanged, so CPU results are
bit-identical to computing on the original tensors.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

Tree = TypeVar("Tree")

# Every packed tensor starts on a multiple of this many bytes, so a view of the buffer as any
# dtype (int64 and float64 included) is aligned.
ALIGN = 16


def _cpu_leaves(leaves: list[Any], device: torch.device) -> list[int]:
    """Positions of the tensor leaves that are not on ``device`` yet."""
    return [
        i
        for i, leaf in enumerate(leaves)
        if isinstance(leaf, torch.Tensor) and leaf.device != device
    ]


def pack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """(uint8 buffer, byte offsets): the tensors' bytes laid end to end, each aligned."""
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
    buffer = torch.empty(total, dtype=torch.uint8)
    for t, start in zip(tensors, offsets, strict=True):
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
        buffer[start : start + raw.numel()].copy_(raw)
    return buffer, offsets


def unpack(
    buffer: torch.Tensor, offsets: list[int], like: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Views of ``buffer`` with the dtypes and shapes of ``like`` (what :func:`pack` packed)."""
    out = []
    for t, start in zip(like, offsets, strict=True):
        raw = buffer[start : start + t.numel() * t.element_size()]
        out.append(raw.view(t.dtype).view(t.shape))
    return out


def to_device(tree: Tree, device: torch.device | str) -> Tree:
    """``tree`` with every tensor leaf on ``device``, moved in ONE host-to-device copy.

    Leaves already on ``device`` and non-tensor leaves are kept as they are; with nothing to
    move (a CPU run) the input itself is returned. The moved tensors are views into one
    buffer: treat them as read-only (write into copies). On CUDA the buffer is pinned and
    copied asynchronously, so the host does not wait for the copy either.
    """
    device = torch.device(device)
    leaves, spec = tree_flatten(tree)
    moving = _cpu_leaves(leaves, device)
    if not moving:
        return tree
    tensors = [leaves[i] for i in moving]
    buffer, offsets = pack(tensors)
    if device.type == "cuda" and torch.cuda.is_available():
        buffer = buffer.pin_memory()
    moved = buffer.to(device, non_blocking=True)
    for i, t in zip(moving, unpack(moved, offsets, tensors), strict=True):
        leaves[i] = t
    return tree_unflatten(leaves, spec)
