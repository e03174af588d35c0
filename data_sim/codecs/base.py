"""The latent-codec contract used by the texture-mismatch family.

This file owns :class:`LatentCodec`: the frozen encode/decode interface every VAE backend
implements, and the one place that turns it into a safe image round trip (input checks,
padding to the codec stride, chunking, precision and device handling, clamping).
Backends only implement ``encode`` and ``decode`` on stride-aligned float32 tensors.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from imageops.padding import pad_to_multiple

# Values a hair outside [0, 1] come from resampling or colour maths upstream; they are
# clamped, not refused. Anything beyond this is a wrong value range, not rounding noise.
RANGE_TOLERANCE = 1e-3


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``device_type`` (a no-op where it has none)."""
    is_available = getattr(torch.amp, "is_autocast_available", None)
    if is_available is not None and not is_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


class LatentCodec(nn.Module, ABC):
    """A frozen image autoencoder used to add latent-space artifacts to images.

    Subclasses implement :meth:`encode` and :meth:`decode` and set :attr:`stride`; callers
    use :meth:`roundtrip`. The codec never trains: parameters are frozen and the module
    stays in eval mode even when a parent calls ``.train()``.
    """

    #: Spatial down-sampling factor of the latent; inputs are padded to a multiple of it.
    stride: int = 8

    @abstractmethod
    def encode(self, x01: Tensor) -> Tensor:
        """Images (B,3,H,W) float32 in [0,1], H and W multiples of :attr:`stride` -> latents."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Latents from :meth:`encode` -> images (B,3,H,W), roughly in [0,1] (not clamped)."""

    def freeze(self) -> LatentCodec:
        """Disable gradients and switch to eval mode; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> LatentCodec:
        # A codec owned by a LightningModule receives .train() with the rest of the
        # model; it must keep inference behaviour (dropout off, no statistics updates).
        return super().train(False)

    def _compute_device(self, fallback: torch.device) -> torch.device:
        """The device the codec's weights live on (``fallback`` for a weightless codec)."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return fallback

    def roundtrip(self, images: Tensor, chunk_size: int = 8) -> Tensor:
        """Encode and decode ``images`` (B,3,H,W) in [0,1]; returns the reconstruction.

        Works on any H and W (reflect-padded to :attr:`stride`, cropped back), in chunks of
        ``chunk_size`` images so memory stays bounded, in float32 with autocast disabled.
        The result has the input's shape, dtype and device and lies in [0,1]. Input chunks
        are moved to the codec's device and results moved back, so a CPU codec also works
        on CUDA tensors (slowly). Not differentiable: it runs under ``inference_mode``,
        but the returned tensor is an ordinary tensor, usable in later autograd graphs.
        """
        self._check_images(images)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(
                f"roundtrip: expected chunk_size to be a positive int, received "
                f"{chunk_size!r}; pass e.g. chunk_size=8 (lower it if memory runs out)"
            )
        # Allocated outside inference mode so callers get a normal tensor back; inference
        # tensors cannot be saved for backward if the result later meets a trainable op.
        out = torch.empty_like(images, memory_format=torch.contiguous_format)
        if images.shape[0] == 0:
            return out
        h, w = images.shape[-2:]
        device = self._compute_device(images.device)
        low_precision = {p.dtype for p in self.parameters()} - {torch.float32}
        if low_precision:
            # The round trip is defined in float32 (fp16 VAEs overflow); refuse rather
            # than silently mixing dtypes inside the convolutions.
            raise TypeError(
                f"{type(self).__name__}: expected float32 weights, received "
                f"{sorted(map(str, low_precision))}; keep the codec in float32 "
                f"(codec.float()) and move it with .to(device) only"
            )
        with torch.inference_mode(), _autocast_off(device.type):
            for start in range(0, images.shape[0], chunk_size):
                chunk = images[start : start + chunk_size]
                x = chunk.to(device=device, dtype=torch.float32)
                x, _ = pad_to_multiple(x.clamp(0.0, 1.0), self.stride)
                y = self.decode(self.encode(x))
                y = y[..., :h, :w].clamp(0.0, 1.0)
                out[start : start + chunk.shape[0]].copy_(y)
        return out

    @staticmethod
    def _check_images(images: Tensor) -> None:
        """Refuse inputs that are not (B,3,H,W) floating images in [0,1], saying how to fix."""
        if not isinstance(images, Tensor):
            raise ValueError(
                f"roundtrip: expected a torch.Tensor of shape (B,3,H,W), received "
                f"{type(images).__name__}; convert with torch.as_tensor(...)"
            )
        if images.dim() != 4:
            raise ValueError(
                f"roundtrip: expected a 4-D tensor (B,3,H,W), received shape "
                f"{tuple(images.shape)}; add a batch dimension with images.unsqueeze(0) or "
                f"move channels first with .permute(0, 3, 1, 2)"
            )
        if images.shape[1] != 3:
            raise ValueError(
                f"roundtrip: expected 3 (RGB) channels in dim 1, received shape "
                f"{tuple(images.shape)}; expand grey images with .expand(-1, 3, -1, -1), "
                f"drop alpha with [:, :3], or move channels first with .permute(0, 3, 1, 2)"
            )
        if images.shape[-2] == 0 or images.shape[-1] == 0:
            raise ValueError(
                f"roundtrip: expected non-empty H and W, received shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"roundtrip: expected a floating dtype with values in [0,1], received "
                f"{images.dtype}; convert with images.float() / 255 for 8-bit images"
            )
        if images.numel() == 0:
            return
        if images.device.type != "cpu":
            # On a device a read would make the host wait: the check is queued instead, and
            # a bad batch fails at the next synchronisation (as a device-side assert).
            lo_t, hi_t = torch.aminmax(images.detach())
            ok = (lo_t >= -RANGE_TOLERANCE) & (hi_t <= 1.0 + RANGE_TOLERANCE)
            torch._assert_async(ok, "roundtrip: expected values in [0,1] (no NaN)")
            return
        lo, hi = torch.stack(torch.aminmax(images.detach())).tolist()  # one read
        # NaN fails both comparisons, so it is refused here too.
        if not (lo >= -RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE):
            hint = (
                "divide by 255 for 8-bit values"
                if hi > 1.0 + RANGE_TOLERANCE and hi <= 255.0 + RANGE_TOLERANCE and lo >= 0
                else "map [-1,1] images with (x + 1) / 2"
                if lo >= -1.0 - RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE
                else "clamp or rescale the values to [0,1] and check for NaN/inf"
            )
            raise ValueError(
                f"roundtrip: expected values in [0,1] (tolerance {RANGE_TOLERANCE}), received "
                f"min {lo:.4g}, max {hi:.4g}; {hint}"
            )
