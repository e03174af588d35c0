"""A per-sample Gaussian blur that never reads the device, so a GPU step never waits on the host.

``kornia.filters.gaussian_blur2d`` checks that ``sigma`` is positive with
``bool((sigma > 0).all())``: with ``sigma`` on a GPU that is a host read, one sync per batch
at each call site (feathered alphas, content grain, texture blur). The simulator's sigmas
are drawn and bounded on the CPU (:mod:`data_sim.transfer`), so the check adds nothing here.

:func:`gaussian_blur2d` is kornia 0.9.0's separable Gaussian blur without that check: the
same kernel (``kornia.filters.get_gaussian_kernel1d``: squared offsets from the nearest
sample, ``exp(-d / (2 sigma^2))``, the unit impulse for ``sigma == 0``, normalised to sum 1),
the same two depthwise correlations (``filter2d_separable``: W first, then H, each padded by
``border_type``) and, for a large float image on the CPU, the same accumulation of shifted
slices kornia uses there instead of convolution. Each op is kornia's, in its order and
dtype, so the output is the same to the bit (tests/test_blur.py compares them;
tests/test_simulation_pinned.py pins the simulation). Owning it also keeps the simulation's
pixels from moving with the installed kornia version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur2d", "gaussian_kernel1d"]

_BORDERS = ("constant", "reflect", "replicate", "circular")
_HAS_MKLDNN = torch.backends.mkldnn.is_available()


def gaussian_kernel1d(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Normalised Gaussian taps ``(B, size)`` for ``sigma`` ``(B, 1)`` (float32 or float64),
    on ``sigma``'s device; an odd ``size`` centres the middle tap. As kornia's
    ``get_gaussian_kernel1d``, op for op: no host read."""
    batch = sigma.shape[0]
    mean = torch.full((1, 1), float(size // 2), device=sigma.device, dtype=sigma.dtype)
    x = (torch.arange(size, device=sigma.device, dtype=sigma.dtype) - mean).expand(batch, -1)
    if size % 2 == 0:
        x = x + 0.5
    # Distance from the nearest sample, so a tiny sigma cannot underflow every tap to 0.
    dist = x.pow(2.0)
    dist = dist - dist.min(-1, keepdim=True)[0]
    denominator = 2 * sigma.pow(2.0)
    is_impulse = denominator == 0  # sigma == 0 (or its square underflows): the unit impulse
    safe_denominator = torch.where(is_impulse, torch.ones_like(denominator), denominator)
    gauss = torch.exp(-dist / safe_denominator)
    gauss = torch.where(is_impulse, (dist == 0).to(dist.dtype), gauss)
    return gauss / gauss.sum(-1, keepdim=True)


def _correlate(x: torch.Tensor, kernel: torch.Tensor, border: str) -> torch.Tensor:
    """kornia's ``filter2d`` (``padding='same'``, correlation) with a ``(B or 1, kH, kW)``
    kernel: one depthwise conv2d over the padded input."""
    b, c, h, w = x.shape
    weight = kernel[:, None, ...].to(device=x.device, dtype=x.dtype)
    weight = weight.expand(-1, c, -1, -1)
    kh, kw = weight.shape[-2:]
    pad_h, pad_w = (kh - 1) // 2, (kw - 1) // 2
    x = F.pad(x, [pad_w, kw - 1 - pad_w, pad_h, kh - 1 - pad_h], mode=border)
    weight = weight.reshape(-1, 1, kh, kw)
    x = x.reshape(-1, weight.size(0), x.size(-2), x.size(-1))
    return F.conv2d(x, weight, groups=weight.size(0), padding=0, stride=1).view(b, c, h, w)


def _slices_eligible(x: torch.Tensor, sigma: torch.Tensor) -> bool:
    """Where kornia blurs by weighted slices instead of convolution: large float images on
    the CPU, eager, outside autocast and autograd."""
    grad = torch.is_grad_enabled()
    return (
        x.device.type == "cpu"
        and not (_HAS_MKLDNN and torch.compiler.is_compiling())
        and not torch.jit.is_tracing()
        and x.dtype in (torch.float32, torch.float64)
        and not any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda", "mps", "xpu"))
        and not (grad and (x.requires_grad or sigma.requires_grad))
        and x.is_contiguous()
        and x.shape[-2] * x.shape[-1] >= 256 * 256
        and x.numel() >= 128 * 1024
        and sigma.shape[0] in (1, x.shape[0])
    )


def _blur_by_slices(
    x: torch.Tensor, kernel_x: torch.Tensor, kernel_y: torch.Tensor, border: str
) -> torch.Tensor:
    """kornia's CPU path: each pass pads once and accumulates the taps' shifted slices."""
    in_place = not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
    for axis, kernel in ((-1, kernel_x), (-2, kernel_y)):
        size = x.shape[axis]
        radius = kernel.shape[-1] // 2
        padding = (radius, radius, 0, 0) if axis == -1 else (0, 0, radius, radius)
        padded = F.pad(x, padding, mode=border)
        out = padded.narrow(axis, 0, size) * kernel[:, 0, None, None, None]
        for tap in range(1, kernel.shape[-1]):
            values, weight = padded.narrow(axis, tap, size), kernel[:, tap, None, None, None]
            out = out.addcmul_(values, weight) if in_place else out.addcmul(values, weight)
        x = out
    return x


def gaussian_blur2d(
    x: torch.Tensor, kernel_size: int | tuple[int, int], sigma: torch.Tensor, border_type: str
) -> torch.Tensor:
    """Blur ``x`` ``(B, C, H, W)`` with a separable Gaussian: ``sigma`` ``(B or 1, 2)`` is
    (sigma_y, sigma_x), ``kernel_size`` an odd int or (kH, kW), ``border_type`` one of
    constant / reflect / replicate / circular. Bit for bit kornia's ``gaussian_blur2d``
    (separable), minus its positivity check, which reads ``sigma`` on the host: callers pass
    sigmas >= 0 (0 gives the identity). Half-precision inputs are blurred in float32 with
    autocast off and rounded back once, as kornia does."""
    ky, kx = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    ky, kx = int(ky), int(kx)
    if ky % 2 == 0 or kx % 2 == 0 or ky <= 0 or kx <= 0:
        raise ValueError(f"kernel size must be odd and positive, got {kernel_size}")
    border = str(border_type).lower()
    if border not in _BORDERS:
        raise ValueError(f"border_type must be one of {_BORDERS}, got {border_type!r}")
    if x.dim() != 4 or sigma.dim() != 2 or sigma.shape[1] != 2:
        raise ValueError(f"expected x (B, C, H, W) and sigma (B, 2), got {x.shape}, {sigma.shape}")
    if sigma.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"sigma must have a batch of 1 or {x.shape[0]}, got {sigma.shape[0]}")
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float32)
    if x.dtype in (torch.float16, torch.bfloat16):
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type=device_type, enabled=False):
                return _blur(x.float(), kx, ky, sigma, border).to(x.dtype)
        return _blur(x.float(), kx, ky, sigma, border).to(x.dtype)
    return _blur(x, kx, ky, sigma, border)


def _blur(x: torch.Tensor, kx: int, ky: int, sigma: torch.Tensor, border: str) -> torch.Tensor:
    sigma = sigma.to(dtype=x.dtype).to(x.device)
    bs = sigma.shape[0]
    kernel_x = gaussian_kernel1d(kx, sigma[:, 1].view(bs, 1))
    kernel_y = gaussian_kernel1d(ky, sigma[:, 0].view(bs, 1))
    if _slices_eligible(x, sigma):
        return _blur_by_slices(x, kernel_x, kernel_y, border)
    out_x = _correlate(x, kernel_x[..., None, :], border)
    return _correlate(out_x, kernel_y[..., None], border)
