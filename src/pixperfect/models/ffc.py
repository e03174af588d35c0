"""Paper-scale refiner with a global receptive field: fast Fourier convolutions (FFC).

The paper's generator is a CM-GAN-derived encoder/decoder of about 41M parameters with an
FFC encoder and no fully-connected bottleneck (docs/method.md §2). This is that shape,
fully convolutional, with the same contract as the U-Net (``pixperfect.models.residual``):
(composite RGB, edit mask) -> composite + a correction from a near-zero head, optional
edit-margin gating, sides multiples of :attr:`stride` = 2**depth.

    stem 3x3 -> depth x [stride-2 conv, FFC res-block] -> ffc_blocks x FFC res-block
             -> depth x [upsample, concat skip, two 3x3 convs] -> near-zero head

An FFC layer (LaMa, Suvorov et al. 2022) splits the channels into a local part (ordinary
3x3 convolutions) and a global part (``global_ratio`` of the channels) whose global->global
path is a 1x1 convolution on the real/imaginary parts of the 2-D spectrum, so every output
pixel sees the whole image after one layer. That is what a colour shift spread over the
whole edit, or a seam far from the rest of the mask, needs. The FFT is circular: in the
spectral branch opposite image borders are neighbours (as in LaMa).

Parameters at the defaults (base_channels=64, depth=3, ffc_blocks=12, global_ratio=0.75):
38,759,043 with ``ffc_norm="group"`` (the default: GroupNorm residual blocks, a residual
decoder and a head on normalised features beside the raw stream, so every level trains),
40,016,579 with ``"none"``. The modulated decoder of CM-GAN is not reproduced: its style
code came from the removed fully-connected bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from pixperfect.errors import ConfigError
from pixperfect.models.blocks import HEAD_STD, ReadOut, group_norm, residual_level
from pixperfect.models.residual import ResidualRefiner, apply_correction, conv3x3, decode

FFC_NORMS = ("group", "none")  # model.ffc_norm: GroupNorm residual blocks, or the plain stack


class FourierUnit(nn.Module):
    """A 1x1 convolution on the spectrum: real and imaginary parts as 2x the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 1)
        # Zero bias: at initialisation the spectral values are small, so a random bias would
        # decide alone which frequencies the ReLU passes, the same set for every image. The
        # unit would then be linear, and a linear 1x1 map on a spectrum only mixes a pixel with
        # its point reflection: no global context. With the content deciding, it mixes globally.
        nn.init.zeros_(self.conv.bias)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, (h, w) = x.dtype, x.shape[-2:]
        # torch.fft has no bfloat16 kernels and half-precision spectra lose the small
        # coefficients anyway: the whole unit runs in float32 with autocast off.
        with torch.autocast(device_type=x.device.type, enabled=False):
            # "ortho": spectrum magnitudes do not grow with the image size, so a network
            # trained on crops behaves the same on full-resolution images.
            x = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays float64
            spec = torch.fft.rfft2(x, norm="ortho")
            f = self.act(self.conv(torch.cat([spec.real, spec.imag], dim=1)))
            real, imag = f.chunk(2, dim=1)
            out = torch.fft.irfft2(torch.complex(real, imag), s=(h, w), norm="ortho")
        return out.to(dtype)


class SpectralTransform(nn.Module):
    """Global->global path: squeeze to half width, add the Fourier unit's output, expand."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.reduce = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.SiLU())
        self.fourier = FourierUnit(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(x + self.fourier(x))


class FFC(nn.Module):
    """One fast Fourier convolution on a single tensor whose last ``global_ratio`` of the
    channels are the global part: local' = l2l(l) + g2l(g), global' = l2g(l) + g2g(g)."""

    def __init__(self, channels: int, global_ratio: float) -> None:
        super().__init__()
        n_global = int(channels * global_ratio)
        self.n_local = channels - n_global
        if not (0 < global_ratio < 1 and self.n_local > 0 and n_global > 0):
            raise ConfigError(
                f"global_ratio={global_ratio} must leave both a local and a global part of "
                f"the {channels} channels"
            )
        self.l2l = nn.Conv2d(self.n_local, self.n_local, 3, padding=1)
        self.g2l = nn.Conv2d(n_global, self.n_local, 3, padding=1, bias=False)
        self.l2g = nn.Conv2d(self.n_local, n_global, 3, padding=1)
        self.g2g = SpectralTransform(n_global)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local, glob = x[:, : self.n_local], x[:, self.n_local :]
        return torch.cat(
            [self.l2l(local) + self.g2l(glob), self.l2g(local) + self.g2g(glob)], dim=1
        )


class FFCResBlock(nn.Module):
    """x + gamma * FFC(act(FFC(x))); with ``norm``, pre-activation with GroupNorm on the
    branch: x + gamma * FFC(act(GN(FFC(act(GN(x)))))). The norm sits on the branch only, so
    the stream keeps the absolute colour the refiner must correct; without it the deep
    stack's gradients fall to Adam's eps (docs/training.md). A per-channel ``gamma``
    starting at 0.1 keeps the stack close to the identity at initialisation."""

    def __init__(self, channels: int, global_ratio: float, norm: bool = False) -> None:
        super().__init__()
        pre = [group_norm(channels), nn.SiLU()] if norm else []
        mid = [group_norm(channels), nn.SiLU()] if norm else [nn.SiLU()]
        self.body = nn.Sequential(
            *pre, FFC(channels, global_ratio), *mid, FFC(channels, global_ratio)
        )
        self.gamma = nn.Parameter(torch.full((1, channels, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.body(x)


class FFCRefiner(ResidualRefiner):
    """Residual FFC encoder/decoder; input sides must be multiples of :attr:`stride`.

    Accepts the ``model`` config keys of the U-Net (``base_channels``, ``depth``,
    ``edit_margin``) plus ``ffc_blocks`` (residual FFC blocks at the bottleneck) and
    ``global_ratio`` (share of channels in the spectral branch)."""

    def __init__(
        self,
        base_channels: int = 64,
        depth: int = 3,
        edit_margin: int = -1,
        colour_prior: str = "none",
        prior_gate: bool = True,
        ffc_blocks: int = 12,
        global_ratio: float = 0.75,
        ffc_norm: str = "group",
    ) -> None:
        """``edit_margin``, ``colour_prior`` and ``prior_gate`` as in :class:`UNetRefiner`.
        ``ffc_norm``: "group" (GroupNorm residual blocks everywhere and a head on normalised
        features, so every level trains) or "none" (the plain stack of earlier versions)."""
        super().__init__(base_channels, depth, edit_margin, colour_prior)
        norm = ffc_norm == "group"
        widths = self.widths
        # One FFC block per encoder level: global context already at high resolution,
        # where the skip connections pick it up for the decoder.
        self.down = nn.ModuleList(
            nn.Sequential(
                conv3x3(widths[i], widths[i + 1], stride=2),
                FFCResBlock(widths[i + 1], global_ratio, norm),
            )
            for i in range(depth)
        )
        self.bottleneck = nn.Sequential(
            *(FFCResBlock(widths[-1], global_ratio, norm) for _ in range(ffc_blocks))
        )
        self.fuse = nn.ModuleList(
            residual_level(widths[i + 1] + widths[i], widths[i], 1, stride=1)
            if norm
            else nn.Sequential(
                conv3x3(widths[i + 1] + widths[i], widths[i]), conv3x3(widths[i], widths[i])
            )
            for i in reversed(range(depth))
        )
        self.out_norm = ReadOut(widths[0]) if norm else None
        if norm:
            self._add_head(prior_gate, 2 * widths[0], HEAD_STD)
        else:
            self._add_head(prior_gate)

    def forward(
        self, composite: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``prior``: the colour prior's image, when computed outside (tiled inference)."""
        x, skips, base = self._encode(composite, mask, prior)
        x = decode(self.fuse, self.up, self.bottleneck(x), skips)
        if self.out_norm is not None:
            x = self.out_norm(x)
        base = self._start(x, composite, base)
        return apply_correction(base, mask, self.head(x), self.edit_margin)
