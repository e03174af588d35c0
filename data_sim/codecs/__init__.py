"""Latent codecs: frozen VAE round trips for the texture-mismatch artifact family.

This package owns the codec backends and :func:`build_codec`, the one entry point the
simulation config uses (``sim.texture.vae.kind`` / ``sim.texture.vae.path``):

* ``"taesd"``: the TAESD family rebuilt in the project (:class:`TAESDCodec`, default TAEF2);
* ``"diffusers"``: any diffusers ``AutoencoderKL`` / ``AutoencoderTiny``
  (:class:`DiffusersCodec`, needs the optional ``diffusers`` extra);
* ``"none"``: no codec (``None``); the texture family then skips the VAE round trip.
"""

from __future__ import annotations

from typing import Any

from data_sim.errors import SimConfigError

from .base import LatentCodec
from .diffusers_codec import DiffusersCodec
from .taesd import TAESDCodec

__all__ = ["CODEC_KINDS", "DiffusersCodec", "LatentCodec", "TAESDCodec", "build_codec"]

CODEC_KINDS = ("taesd", "diffusers", "none")


def build_codec(kind: str, path: str | None = None, **kw: Any) -> LatentCodec | None:
    """Build the latent codec named by ``kind``, loaded on the CPU in float32 and frozen.

    ``kind="taesd"``: ``path`` is a folder with ``<variant>_encoder.pth`` and
    ``<variant>_decoder.pth``; ``kw`` may set ``variant`` (default ``"taef2"``).
    ``kind="diffusers"``: ``path`` is a local folder or hub id; ``kw`` goes to
    :meth:`DiffusersCodec.from_pretrained` (``model_class``, ``subfolder``,
    ``sample_posterior``, ...). ``kind="none"``: returns ``None``.
    Move the result with ``.to(device)``.
    """
    key = str(kind).strip().lower()
    if key not in CODEC_KINDS:
        raise SimConfigError(
            f"build_codec: expected kind to be one of {CODEC_KINDS}, received {kind!r}; "
            f"set sim.texture.vae.kind accordingly"
        )
    if key == "none":
        return None
    if path is None or str(path).strip() == "":
        example = "a folder with taef2_encoder.pth" if key == "taesd" else "a folder or hub id"
        raise SimConfigError(
            f"build_codec: kind={key!r} needs a path ({example}), received {path!r}; "
            f"set the config key sim.texture.vae.path"
        )
    if key == "taesd":
        return TAESDCodec.from_dir(path, **kw)
    return DiffusersCodec.from_pretrained(path, **kw)
