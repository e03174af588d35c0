"""Mask-conditioned discriminators and the registry that builds them.

The discriminator sees the image and the edit mask (4 channels), so it can judge the edited
region and its boundary against the background of the same image (docs/method.md §2).
Every convolution carries spectral normalisation; there is no batch normalisation, which
would couple the samples of a batch and corrupt the R1 penalty's per-sample gradients.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pixperfect.errors import ConfigError


def _sn_conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    # Padding 1: kernel 4 / stride 2 halves a side exactly, kernel 3 / stride 1 keeps it.
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride=stride, padding=1))


class PatchDiscriminator(nn.Module):
    """PatchGAN on (image, mask): logits of shape (B, 1, H / 2**n_down, W / 2**n_down).

    Each logit judges one patch of the input; the output grid is the input grid divided by
    :attr:`stride` = 2**n_down (sides that are not multiples are floored). The loss labels
    each logit with the mask max-pooled to that grid
    (:func:`pixperfect.losses.adversarial.fake_region`), so a logit that touches the edit or
    its boundary counts as fake (LaMa's mask-aware labels).
    """

    def __init__(self, base_channels: int = 64, n_down: int = 3, max_channels: int = 512) -> None:
        super().__init__()
        self.stride = 2**n_down
        widths = [min(base_channels * 2**i, max_channels) for i in range(n_down + 1)]
        layers: list[nn.Module] = []
        cin = 4
        for i in range(n_down):
            layers += [_sn_conv(cin, widths[i], 4, 2), nn.LeakyReLU(0.2)]
            cin = widths[i]
        # Two stride-1 layers widen the receptive field without shrinking the grid further.
        layers += [_sn_conv(cin, widths[n_down], 3, 1), nn.LeakyReLU(0.2)]
        layers += [_sn_conv(widths[n_down], 1, 3, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 3, H, W) in [0, 1], ``mask`` (B, 1, H, W) in {0, 1} -> raw logits."""
        # Centred like the refiners' input: a [-1, 1] image and a {-1, 1} mask.
        return self.net(torch.cat([image * 2 - 1, mask * 2 - 1], dim=1))


# ``gan.discriminator`` -> architecture; the config's allowed names are these keys.
DISCRIMINATORS: dict[str, type[nn.Module]] = {"patch": PatchDiscriminator}


def build_discriminator(name: str, **kwargs) -> nn.Module:
    """The discriminator called ``name`` with ``kwargs`` as its constructor arguments."""
    if name not in DISCRIMINATORS:
        raise ConfigError(f"unknown discriminator {name!r}; available: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](**kwargs)
