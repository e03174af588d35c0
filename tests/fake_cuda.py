"""Run device code on a fake ``cuda`` device, without a GPU, and fail on what a GPU would wait
for: a read of a device value on the host, or a CPU tensor mixed into device work.

Under torch's ``FakeTensorMode`` every tensor is metadata only, so a CUDA build of torch runs
"on cuda" on any machine. The mode itself raises ``DataDependentOutputException`` /
``DynamicOutputShapeException`` for host reads (``item``, ``bool``, ``nonzero``, ...) and
``FakeTensorDeviceMismatchError`` for most ops mixing devices; :class:`DeviceChecker` adds
what it lets through (a CPU index tensor used on a device tensor, which CUDA copies to the
device behind the caller's back) and counts explicit host-to-device copies.

Build configs and models and draw CPU-side parameters *outside* the mode (every tensor made
inside it is fake, CPU ones too), move modules with :func:`to_fake_cuda` inside it, and run
what runs on the device inside :func:`checked`.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorDeviceMismatchError,
    FakeTensorMode,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")
_COPIES = {"aten._to_copy", "aten.copy_", "aten.copy"}


class CpuTensorOnDevice(RuntimeError):
    """A CPU tensor (not a 0-dim scalar) took part in an op on device tensors, or was copied
    to the device beyond the copies allowed."""


# What counts as a device bug here: each names what a GPU would do instead.
DEVICE_ERRORS = (
    CpuTensorOnDevice,
    FakeTensorDeviceMismatchError,
    DataDependentOutputException,
    DynamicOutputShapeException,
)


class FakeCudaGenerator(torch.Generator):
    """A CPU generator that says it lives on ``cuda``: fake random ops accept it, and code
    that puts its draws on ``generator.device`` puts them on the fake device (a real CUDA
    generator cannot be made without a driver)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA


class DeviceChecker(TorchDispatchMode):
    """Pushed inside a ``FakeTensorMode``: raises :class:`CpuTensorOnDevice` for an op mixing a
    CPU tensor with cuda tensors, and counts host-to-device copies in ``copies`` (raising at
    the one past ``max_copies``: each is a blocking transfer on a GPU)."""

    def __init__(self, max_copies: int | None = None) -> None:
        super().__init__()
        self.copies: list[str] = []
        self.max_copies = max_copies

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if name in _COPIES:
            results = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            source = inputs[-1] if name != "aten._to_copy" else inputs[0]
            if source.device.type == "cpu" and any(t.device.type == "cuda" for t in results):
                self.copies.append(f"{func} of {tuple(source.shape)} {source.dtype}")
                if self.max_copies is not None and len(self.copies) > self.max_copies:
                    raise CpuTensorOnDevice(
                        f"host-to-device copy {len(self.copies)} (at most {self.max_copies}): "
                        + self.copies[-1]
                    )
            return out
        devices = {t.device.type for t in inputs if t.dim() > 0}
        if "cpu" in devices and "cuda" in devices:
            shapes = [(tuple(t.shape), t.device.type) for t in inputs]
            raise CpuTensorOnDevice(f"{func} mixes a CPU tensor into device work: {shapes}")
        return out


def project_frame(error: BaseException) -> str:
    """The innermost frame of ``error``'s traceback in the project's own code (not torch,
    not the tests): where the device bug is."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [
        f
        for f in frames
        if f.filename.startswith(str(ROOT))
        and "/.venv/" not in f.filename
        and "/tests/" not in f.filename
    ]
    if not ours:
        return "no project frame"
    f = ours[-1]
    return f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} in {f.name}: {f.line}"


def to_fake_cuda(mode: FakeTensorMode, *modules: torch.nn.Module | None) -> None:
    """Replace (in place) every parameter and buffer of ``modules`` by a fake tensor on
    cuda; call inside ``mode``. By hand, not ``module.to``: its tensor swap refuses some
    parametrised weights (spectral norm)."""
    for module in modules:
        if module is None:
            continue
        for sub in module.modules():
            for name, p in sub._parameters.items():
                if p is not None:
                    fake = mode.from_tensor(p.detach()).to(CUDA)
                    sub._parameters[name] = torch.nn.Parameter(fake, p.requires_grad)
            for name, b in sub._buffers.items():
                if b is not None:
                    sub._buffers[name] = mode.from_tensor(b).to(CUDA)


@contextmanager
def fake_cuda() -> Iterator[FakeTensorMode]:
    """The fake mode (real CPU tensors made outside it may be passed in)."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


@contextmanager
def checked(max_copies: int | None = None) -> Iterator[DeviceChecker]:
    """Inside :func:`fake_cuda`: the checker, with any device bug re-raised as an
    AssertionError naming the project line that made it."""
    checker = DeviceChecker(max_copies)
    try:
        with checker:
            yield checker
    except DEVICE_ERRORS as error:
        raise AssertionError(
            f"device bug at {project_frame(error)}: {type(error).__name__}: {error}"
        ) from error
