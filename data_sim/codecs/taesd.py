"""TAESD tiny autoencoders (madebyollin/taesd, MIT) as a latent codec.

This file owns the TAESD architecture rebuilt in the project and :class:`TAESDCodec`, which
loads the released encoder/decoder state dicts (``<variant>_encoder.pth`` /
``<variant>_decoder.pth``, or ``.safetensors`` with the same keys) with ``strict=True``.

Supported layouts, told apart by the state dict alone:

* classic TAESD / TAESDXL / TAESD3 / TAEF1: 4 or 16 latent channels;
* TAEF2 (FLUX.2 latent space): 32 latent channels and group-norm "pool" branches in the
  blocks nearest the latent (keys ``<i>.pool.{0,1,3}.*``).

All are 8x compressing. The encoder takes images in [0,1] and the decoder returns images
in (roughly) [0,1]: the reference ``taesd.py`` feeds ``to_tensor`` output straight in and
clamps the decoder output to [0,1]; the [-1,1] handling seen in ComfyUI and diffusers
wrappers lives outside the networks. The latent is the raw, unpacked one (TAEF2: 32
channels at H/8; FLUX.2's 2x2 patch packing to 128 channels is a pipeline detail that a
round trip does not need).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from data_sim.errors import CodecWeightsError, MissingCodecWeightsError

from .base import LatentCodec

_WEIGHTS_HINT = (
    "copy {files} from the madebyollin/taesd repository "
    "(https://github.com/madebyollin/taesd) into {folder}, or set the config key "
    "sim.texture.vae.path to a folder that holds them"
)

# Positions of the blocks in the reference nn.Sequential layouts. Everything else is a
# conv (or, in the decoder, Clamp / ReLU / Upsample, which have no weights).
_ENCODER_BLOCKS = (1, 3, 4, 5, 7, 8, 9, 11, 12, 13)
_DECODER_BLOCKS = (3, 4, 5, 8, 9, 10, 13, 14, 15, 18)
# TAEF2 places its group-norm pools in the blocks at the latent resolution.
TAEF2_ENCODER_POOLS = (11, 12, 13)
TAEF2_DECODER_POOLS = (3, 4, 5)


def _conv(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the latent to about (-3, 3), as the decoder was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block: three 3x3 convs, optional 1x1 skip, optional group-norm pool branch.

    The pool branch (TAEF2) is ``conv1x1(C->4C) -> GroupNorm(4) -> ReLU -> conv1x1(4C->C)``
    added to the input before the convs; group norm gives the block image-wide statistics.
    """

    def __init__(self, n_in: int, n_out: int, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool: nn.Sequential | None = None
        if pool:
            n_gn = n_in * 4
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, n_gn, 1, bias=False),
                nn.GroupNorm(4, n_gn),
                nn.ReLU(inplace=True),
                nn.Conv2d(n_gn, n_in, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def _check_pools(pools: Iterable[int], blocks: tuple[int, ...], what: str) -> frozenset[int]:
    pools = frozenset(pools)
    if not pools <= set(blocks):
        raise ValueError(
            f"{what}: pool branches can only sit on block positions {blocks}, received "
            f"{sorted(pools)}"
        )
    return pools


def build_encoder(latent_channels: int = 4, pools: Iterable[int] = ()) -> nn.Sequential:
    """The TAESD encoder (8x down), with group-norm pools on the block indices in ``pools``."""
    p = _check_pools(pools, _ENCODER_BLOCKS, "build_encoder")
    return nn.Sequential(
        _conv(3, 64), Block(64, 64, 1 in p),
        _conv(64, 64, stride=2, bias=False),
        Block(64, 64, 3 in p), Block(64, 64, 4 in p), Block(64, 64, 5 in p),
        _conv(64, 64, stride=2, bias=False),
        Block(64, 64, 7 in p), Block(64, 64, 8 in p), Block(64, 64, 9 in p),
        _conv(64, 64, stride=2, bias=False),
        Block(64, 64, 11 in p), Block(64, 64, 12 in p), Block(64, 64, 13 in p),
        _conv(64, latent_channels),
    )  # fmt: skip


def build_decoder(latent_channels: int = 4, pools: Iterable[int] = ()) -> nn.Sequential:
    """The TAESD decoder (8x up), with group-norm pools on the block indices in ``pools``."""
    p = _check_pools(pools, _DECODER_BLOCKS, "build_decoder")
    return nn.Sequential(
        Clamp(), _conv(latent_channels, 64), nn.ReLU(),
        Block(64, 64, 3 in p), Block(64, 64, 4 in p), Block(64, 64, 5 in p),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        Block(64, 64, 8 in p), Block(64, 64, 9 in p), Block(64, 64, 10 in p),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        Block(64, 64, 13 in p), Block(64, 64, 14 in p), Block(64, 64, 15 in p),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        Block(64, 64, 18 in p), _conv(64, 3),
    )  # fmt: skip


def _pool_positions(state: Mapping[str, Tensor]) -> frozenset[int]:
    parts = (k.split(".") for k in state)
    return frozenset(int(p[0]) for p in parts if p[0].isdigit() and p[1:3] == ["pool", "0"])


def _required_shape(state: Mapping[str, Tensor], key: str, path: str | os.PathLike) -> tuple:
    if key not in state:
        raise CodecWeightsError(
            f"{os.fspath(path)} is not a supported TAESD state dict: expected key {key!r} of "
            f"the 8x TAESD/TAEF1/TAEF2 layout, received keys like {sorted(state)[:4]}"
        )
    return tuple(state[key].shape)


def _load_strict(
    module: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike
) -> nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CodecWeightsError(
            f"{os.fspath(path)} does not match the TAESD layout inferred from it (8x "
            f"encoder/decoder, e.g. not the 32x TAESANA variant): {err}"
        ) from err
    return module


def encoder_from_state_dict(
    state: Mapping[str, Tensor], path: str | os.PathLike = "<state dict>"
) -> nn.Sequential:
    """Build a float32 encoder matching ``state`` (latent channels, pools) and load it strictly."""
    latent_channels = _required_shape(state, "14.weight", path)[0]
    enc = build_encoder(latent_channels, _pool_positions(state))
    return _load_strict(enc, state, path)  # type: ignore[return-value]


def decoder_from_state_dict(
    state: Mapping[str, Tensor], path: str | os.PathLike = "<state dict>"
) -> nn.Sequential:
    """Build a float32 decoder matching ``state`` (latent channels, pools) and load it strictly."""
    latent_channels = _required_shape(state, "1.weight", path)[1]
    dec = build_decoder(latent_channels, _pool_positions(state))
    return _load_strict(dec, state, path)  # type: ignore[return-value]


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a ``.pth``/``.pt`` or ``.safetensors`` state dict onto the CPU (tensors only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(os.fspath(path), device="cpu")
    # weights_only: a .pth is a pickle; never execute code from a downloaded file.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise CodecWeightsError(f"{path}: expected a state dict, received {type(state).__name__}")
    return dict(state)


class TAESDCodec(LatentCodec):
    """A frozen TAESD-family encoder/decoder pair (float32) used for VAE round trips."""

    stride = 8

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential) -> None:
        super().__init__()
        enc_c = encoder[-1].out_channels
        dec_c = decoder[1].in_channels
        if enc_c != dec_c:
            raise CodecWeightsError(
                f"TAESDCodec: encoder and decoder disagree on latent channels (encoder "
                f"{enc_c}, decoder {dec_c}); load the encoder and decoder of the same variant"
            )
        self.latent_channels: int = enc_c
        self.encoder = encoder.float()
        self.decoder = decoder.float()
        self.freeze()

    @classmethod
    def from_files(
        cls, encoder_path: str | os.PathLike, decoder_path: str | os.PathLike
    ) -> TAESDCodec:
        """Load a codec from released encoder/decoder weight files (``.pth``/``.safetensors``)."""
        missing = [Path(p) for p in (encoder_path, decoder_path) if not Path(p).is_file()]
        if missing:
            names = " and ".join(p.name for p in missing)
            raise MissingCodecWeightsError(
                f"TAESD weights not found: {', '.join(map(str, missing))}; "
                + _WEIGHTS_HINT.format(files=names, folder=missing[0].parent)
            )
        encoder = encoder_from_state_dict(load_state_dict_file(encoder_path), encoder_path)
        decoder = decoder_from_state_dict(load_state_dict_file(decoder_path), decoder_path)
        return cls(encoder, decoder)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, variant: str = "taef2") -> TAESDCodec:
        """Load ``<variant>_encoder`` and ``<variant>_decoder`` (``.pth`` or ``.safetensors``)."""
        folder = Path(path).expanduser()
        if folder.is_file():
            raise NotADirectoryError(
                f"TAESD weights: expected a folder holding {variant}_encoder.pth and "
                f"{variant}_decoder.pth, received the file {folder}; pass its parent folder"
            )
        found: dict[str, Path] = {}
        missing: list[Path] = []
        for part in ("encoder", "decoder"):
            candidates = [folder / f"{variant}_{part}{ext}" for ext in (".pth", ".safetensors")]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit is None:
                missing.append(candidates[0])
            else:
                found[part] = hit
        if missing:
            where = "" if folder.is_dir() else f" (the folder {folder} does not exist)"
            names = " and ".join(p.name for p in missing)
            raise MissingCodecWeightsError(
                f"TAESD weights not found: {', '.join(map(str, missing))} (or .safetensors)"
                f"{where}; " + _WEIGHTS_HINT.format(files=names, folder=folder)
            )
        return cls.from_files(found["encoder"], found["decoder"])

    def encode(self, x01: Tensor) -> Tensor:
        return self.encoder(x01)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def extra_repr(self) -> str:
        return f"latent_channels={self.latent_channels}, stride={self.stride}"
