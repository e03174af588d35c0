"""The training step's fast paths, each behind a config switch (on in configs/paper.yaml):

- ``trainer.compile``: :func:`compile_generator`, ``torch.compile`` of the generator's call
  in place (``nn.Module.compile``): no wrapper module, so the state_dict keys (and with them
  checkpoints and exports) are the same compiled or not.
- ``trainer.cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` (:func:`apply_backend_flags`).
- ``trainer.channels_last``: :func:`to_channels_last`, the convolutions' weights and the
  generator's image inputs in NHWC, except the FFC's spectral 1x1 convolution (it runs on
  the float32 spectrum that ``torch.fft`` returns in NCHW, so NHWC would only add copies).
- ``optim.ema_foreach``: :func:`ema_update` with ``torch._foreach_lerp_`` over the parameter
  list (the loop's numbers in a few multi-tensor kernels).
- ``optim.fused``: :func:`adam_kernel`, Adam's fused kernel on CUDA, foreach elsewhere.

Each has a CPU test in tests/test_fast_paths.py; benchmarks/gpu_check.py times them on a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

FUSED_ADAM_DEVICES = ("cuda",)  # where torch.optim.Adam(fused=True) is used
# torch.compile's options for trainer.compile (tests swap in a backend that needs no
# C++ compiler run: inductor's CPU code generation takes minutes on the 2-core machine)
COMPILE_OPTIONS: dict = {}


def ema_update(
    ema: Sequence[torch.Tensor], live: Sequence[torch.Tensor], weight: float, foreach: bool
) -> None:
    """``ema <- ema + weight * (live - ema)`` for every pair, in place: one multi-tensor
    lerp over the lists (``foreach``) or one lerp per tensor."""
    ema, live = list(ema), list(live)
    if len(ema) != len(live):
        raise ValueError(f"EMA of {len(ema)} tensors from {len(live)}")
    if foreach and ema:
        torch._foreach_lerp_(ema, live, weight)
        return
    for e, v in zip(ema, live, strict=True):
        e.lerp_(v, weight)


def adam_kernel(device_type: str, fused: bool) -> dict[str, bool]:
    """Keyword arguments choosing Adam's kernel on ``device_type``: ``fused`` asks for the
    fused kernel where the device has one (CUDA), else the foreach kernel; not asked: none
    (torch's own choice)."""
    if not fused:
        return {}
    if device_type in FUSED_ADAM_DEVICES:
        return {"fused": True}
    return {"foreach": True}


def apply_backend_flags(cudnn_benchmark: bool) -> None:
    """Process-wide backend switches (before the first convolution)."""
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)


def compile_generator(generator: nn.Module, **options) -> nn.Module:
    """Compile ``generator``'s call in place and return it: its parameters keep their names
    (no ``_orig_mod.`` prefix), so its state_dict loads into an uncompiled model and an
    uncompiled model's into it."""
    generator.compile(**options)
    return generator


def _spectral(module: nn.Module) -> set[int]:
    """ids of the convolutions that run on a spectrum (the FFC's Fourier units)."""
    from pixperfect.models.ffc import FourierUnit

    return {
        id(m) for unit in module.modules() if isinstance(unit, FourierUnit) for m in unit.modules()
    }


def _nhwc_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last)
        if isinstance(a, torch.Tensor) and a.dim() == 4
        else a
        for a in args
    )


def to_channels_last(generator: nn.Module) -> nn.Module:
    """The 4-D weights of ``generator``'s convolutions in channels_last (NHWC), except those
    on a spectrum (:func:`_spectral`), and its 4-D inputs made NHWC by a forward pre-hook;
    returns it. The values are unchanged (tests/test_fast_paths.py: outputs equal to float
    tolerance); only the layout, and with it cuDNN's kernels, changes."""
    skip = _spectral(generator)
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    for m in convs:
        if id(m) not in skip:
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    generator.register_forward_pre_hook(_nhwc_inputs)
    spectral = sum(id(m) in skip for m in convs)
    log.info("channels_last: %d convolutions (%d spectral ones left NCHW)",
             len(convs) - spectral, spectral)  # fmt: skip
    return generator


def apply_fast_paths(module: nn.Module) -> None:
    """The config's fast paths on a RefinerModule, once (its ``configure_model``: before the
    module goes to the device and DDP wraps it): cuDNN's benchmark flag, channels_last on the
    generator and its EMA, the generator compiled."""
    if getattr(module, "_fast_paths_applied", False):
        return
    module._fast_paths_applied = True
    t = module.cfg.trainer
    apply_backend_flags(t.cudnn_benchmark)
    if t.channels_last:
        for generator in (module.generator, module.generator_ema):
            if generator is not None:
                to_channels_last(generator)
    if t.compile:
        compile_generator(module.generator, **COMPILE_OPTIONS)
        log.info(
            "generator compiled (torch.compile%s)", f" {COMPILE_OPTIONS}" * bool(COMPILE_OPTIONS)
        )
