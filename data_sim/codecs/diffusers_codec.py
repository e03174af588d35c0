"""A latent codec backed by a diffusers image autoencoder (optional ``diffusers`` extra).

This file owns :class:`DiffusersCodec`, which wraps ``AutoencoderKL`` (SD/SDXL/SD3/FLUX VAEs),
``AutoencoderTiny`` (TAESD in diffusers format) or any other 4-D diffusers image autoencoder
with the same ``encode``/``decode`` outputs, and the scaling conventions between them and
the project's [0,1] images:

* diffusers autoencoders take and return images in [-1,1]. That holds for
  ``AutoencoderTiny`` too: its ``EncoderTiny`` maps [-1,1] to TAESD's [0,1] internally and
  ``DecoderTiny`` maps back, so the wrapper always converts [0,1] <-> [-1,1];
* ``AutoencoderKL.encode`` returns a ``latent_dist`` (its mean, or a sample, is used);
  ``AutoencoderTiny.encode`` returns ``latents``;
* the diffusion-space latent is ``(z - shift_factor) * scaling_factor``, undone in
  ``decode``; the two cancel in a round trip but keep ``encode`` output in the space a
  diffusion model sees.

``diffusers`` is imported lazily, only when a model is loaded by name.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from data_sim.errors import CodecWeightsError, SimConfigError

from .base import LatentCodec

_INSTALL_HINT = "install the optional extra with: pip install 'pixperfect[diffusers]'"


def import_diffusers() -> Any:
    """Import and return the ``diffusers`` module, or say how to install it."""
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            f"the 'diffusers' codec needs the diffusers package, which is not installed; "
            f"{_INSTALL_HINT}"
        ) from err
    return diffusers


def _config_get(model: nn.Module, key: str, default: Any = None) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        return default
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def _infer_stride(model: nn.Module) -> int:
    """Spatial compression of a diffusers autoencoder from its config (8 for the usual VAEs)."""
    # AutoencoderTiny: every encoder stage after the first halves the resolution.
    stages = _config_get(model, "num_encoder_blocks") or _config_get(model, "block_out_channels")
    if stages:
        return 2 ** (len(stages) - 1)
    return 8


class DiffusersCodec(LatentCodec):
    """A frozen diffusers image autoencoder (kept in float32) used for VAE round trips."""

    def __init__(
        self,
        model: nn.Module,
        sample_posterior: bool = False,
        stride: int | None = None,
    ) -> None:
        """Wrap an already-built diffusers autoencoder.

        ``sample_posterior``: draw from ``latent_dist`` instead of taking its mean (mode),
        which adds the VAE's own latent noise; the mean gives the deterministic round trip.
        ``stride``: override the compression factor read from the model config.
        """
        super().__init__()
        for name in ("encode", "decode"):
            if not callable(getattr(model, name, None)):
                raise TypeError(
                    f"DiffusersCodec: expected a diffusers autoencoder with encode() and "
                    f"decode(), received {type(model).__name__} without {name}()"
                )
        # float32: fp16 VAEs (notably SDXL's) overflow; the round trip is not the hot path.
        self.model = model.to(torch.float32)
        self.sample_posterior = bool(sample_posterior)
        self.stride = int(stride) if stride is not None else _infer_stride(model)
        self.scaling_factor = float(_config_get(model, "scaling_factor", 1.0))
        self.shift_factor = float(_config_get(model, "shift_factor", 0.0))
        if self.scaling_factor == 0.0:
            raise CodecWeightsError("DiffusersCodec: the model config has scaling_factor 0")
        self.freeze()

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> DiffusersCodec:
        """Wrap an already-built ``AutoencoderKL`` / ``AutoencoderTiny`` instance."""
        return cls(model, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        model_class: str = "auto",
        subfolder: str | None = None,
        sample_posterior: bool = False,
        stride: int | None = None,
        **load_kwargs: Any,
    ) -> DiffusersCodec:
        """Load a diffusers autoencoder from a local folder or a hub id onto the CPU.

        ``model_class``: a diffusers class name such as ``"AutoencoderKL"`` or
        ``"AutoencoderTiny"``; ``"auto"`` reads ``_class_name`` from the model's config.
        ``subfolder``: e.g. ``"vae"`` for a full pipeline repository. Remaining keyword
        arguments go to ``from_pretrained`` (``revision``, ``local_files_only``, ...).
        """
        diffusers = import_diffusers()
        if model_class == "auto":
            config = diffusers.AutoencoderKL.load_config(
                os.fspath(name_or_path), subfolder=subfolder, **_config_kwargs(load_kwargs)
            )
            model_class = config.get("_class_name") or "AutoencoderKL"
        klass = getattr(diffusers, model_class, None)
        if klass is None or not hasattr(klass, "from_pretrained"):
            raise SimConfigError(
                f"DiffusersCodec: expected a diffusers autoencoder class such as "
                f"'AutoencoderKL' or 'AutoencoderTiny', received {model_class!r}"
            )
        model = klass.from_pretrained(
            os.fspath(name_or_path), subfolder=subfolder, torch_dtype=torch.float32, **load_kwargs
        )
        return cls(model, sample_posterior=sample_posterior, stride=stride)

    def encode(self, x01: Tensor) -> Tensor:
        out = self.model.encode(x01 * 2.0 - 1.0)
        dist = getattr(out, "latent_dist", None)
        if dist is not None:
            z = dist.sample() if self.sample_posterior else dist.mode()
        elif hasattr(out, "latents"):  # AutoencoderTiny
            z = out.latents
        elif hasattr(out, "latent"):  # AutoencoderDC
            z = out.latent
        else:  # a return_dict=False tuple: (distribution or latent,)
            z = out[0]
            if hasattr(z, "mode"):
                z = z.sample() if self.sample_posterior else z.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        z = z / self.scaling_factor + self.shift_factor
        out = self.model.decode(z)
        y = out.sample if hasattr(out, "sample") else out[0]
        return (y + 1.0) * 0.5

    def extra_repr(self) -> str:
        return (
            f"stride={self.stride}, scaling_factor={self.scaling_factor}, "
            f"shift_factor={self.shift_factor}, sample_posterior={self.sample_posterior}"
        )


def _config_kwargs(load_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``from_pretrained`` arguments that ``load_config`` also accepts."""
    keys = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")
    return {k: v for k, v in load_kwargs.items() if k in keys}
