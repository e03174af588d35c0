"""The refiner's config section (``model.*``): its schema with the defaults, and those
defaults filled into a section stored in a checkpoint or an export.

It lives beside the models rather than in :mod:`pixperfect.config` (the whole training
config, the simulator's section included) so that loading a refiner reads its section without
importing the simulator: :mod:`pixperfect.inference` imports nothing from ``data_sim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pixperfect.errors import ConfigError


@dataclass
class ModelConfig:
    """The ``model`` section: which refiner, its size and its options."""

    name: str = "unet"
    # Width of the first stage; null: the architecture's own (unet 24, ffc 64: the paper's
    # ~40M-parameter refiner). A number applies to whichever architecture is named.
    base_channels: int | None = None
    depth: int = 3  # down-samplings; the stride is 2**depth
    edit_margin: int = -1  # >= 0: corrections only within this many px of the mask
    # none | reinhard (ring colour transfer) | seam_affine (affine colour map fitted across
    # the seam): the network's start (pixperfect.models.colour_prior)
    colour_prior: str = "none"
    # With a prior: a learned per-pixel blend of composite and prior, so the network can
    # refuse the prior where it is wrong (false: the prior as a fixed start).
    prior_gate: bool = True
    # unet: a global branch at the bottleneck (pooled features inside and outside the edit,
    # added back everywhere), so every pixel sees the statistics of the whole crop
    global_context: bool = False
    # unet: a learned per-image 3x4 colour map on top of the start image, from the pooled
    # bottleneck features (pixperfect.models.unet.ColourHead)
    colour_head: bool = False
    # resunet: residual blocks per level; a per-pixel 3x4 colour map predicted at the
    # bottleneck and applied on top of the start image (pixperfect.models.colour_field)
    blocks: int = 1
    colour_field: bool = False
    ffc_blocks: int = 12  # ffc: Fourier-convolution residual blocks in the bottleneck
    global_ratio: float = 0.75  # ffc: share of channels in the global (spectral) branch
    # ffc: group (GroupNorm residual blocks, every level trains) | none (the plain stack,
    # whose bottleneck gets gradients at Adam's eps: docs/training.md)
    ffc_norm: str = "group"


def filled_model_section(model: dict[str, Any]) -> dict[str, Any]:
    """A stored ``model`` section with the schema's defaults filled in (older checkpoints may
    lack newer keys); an unknown key or a wrong type is refused, naming the key."""
    try:
        return dict(OmegaConf.merge(OmegaConf.structured(ModelConfig), model))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        reason = str(e).splitlines()[0]
        raise ConfigError(
            f"the stored model section has a bad key or value (model.{key}: {reason}); it "
            "does not match this version's ModelConfig (pixperfect.models.model_config)"
        ) from None
