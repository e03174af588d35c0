"""ArtifactSimulator: clean photos in, (composite, edit mask, alpha, target) out.

It composes the artifact families from one config. Parameters are drawn per sample on the
CPU from an explicit generator (same seed, same batch, on any device), the images are
processed batched on their own device in float32, and the drawn parameters are returned
with the batch so any sample can be explained and replayed.

    target    = the clean photo, with the texture family's sensor noise and JPEG
                (the user's original photo, as cameras and the web deliver it)
    edited    = target, then in order (each per sample with its own probability):
                content discontinuity (inpaint a widened mask, paste the original back)
                misalignment (shift / rotate / scale / warp the edited content)
                colour shift (jitter blended through a smooth field)
                texture (blur, VAE round trip, the decoder's own noise)
    composite = target + alpha * (edited - target)

Only pixels where the compositing alpha is non-zero differ from the target: the refiner
learns to fix the edit and to leave the user's photo, grain and JPEG blocks included, alone.

A family is one module with its config and a :class:`data_sim.family.Family` subclass; the
simulator draws and applies the families of :data:`FAMILY_TYPES` in order. Adding one means
writing its module, giving it a section in :class:`SimConfig` and an entry in
:data:`FAMILY_TYPES` (and its report labels in :data:`FAMILIES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from data_sim.colour import ColourFamily, ColourShiftConfig
from data_sim.content import ContentDiscontinuityConfig, ContentFamily
from data_sim.family import Family, Params
from data_sim.masks import (
    BoundaryConfig,
    MaskConfig,
    describe_boundary,
    describe_mask,
    plan_alpha,
    plan_masks,
    run_alpha,
    run_masks,
    sample_boundary_params,
    sample_mask_params,
)
from data_sim.misalign import MisalignConfig, MisalignFamily
from data_sim.mix import (
    MixConfig,
    describe_mix,
    is_clean,
    plan_mix,
    run_mix,
    sample_mix_params,
    switch_off_families,
)
from data_sim.texture import TextureConfig, TextureFamily
from data_sim.transfer import to_device

# The draws of every family for a batch, by family name (each a family.Params).
SimParams = dict[str, Params]


@dataclass
class SimConfig:
    mask: MaskConfig = field(default_factory=MaskConfig)
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    content: ContentDiscontinuityConfig = field(default_factory=ContentDiscontinuityConfig)
    misalign: MisalignConfig = field(default_factory=MisalignConfig)
    colour: ColourShiftConfig = field(default_factory=ColourShiftConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    mix: MixConfig = field(default_factory=MixConfig)  # nearly-right and clean samples

    def validate(self) -> None:
        for section in fields(self):
            getattr(self, section.name).validate()


# The artifact families in the order they are drawn and applied; each reads the SimConfig
# section named by its key, and its parameters are stored under that key.
FAMILY_TYPES: tuple[type[Family], ...] = (
    ContentFamily,
    MisalignFamily,
    ColourFamily,
    TextureFamily,
)

# Every label family_names reports, in the order evaluation tables list them (``codec``: the
# latent round trip of the texture family).
FAMILIES = ("colour", "texture", "codec", "content", "misalign")

# Under ensure_artifact a sample that drew no family gets this one: cheap, and visible on
# any photo.
FALLBACK_FAMILY = "colour"


RANGE_HINT = "divide 8-bit data by 255 (16-bit by 65535), or map [-1, 1] data with (x + 1) / 2"


def check_images(images: torch.Tensor) -> None:
    """Refuse anything but a float (B, 3, H, W) batch in [0, 1], saying how to fix it."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(
            f"expected RGB images as a (B, 3, H, W) tensor, got {shape}; convert greyscale "
            "with x.expand(-1, 3, -1, -1) and drop alpha with x[:, :3]"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"expected floating-point images in [0, 1], got dtype {images.dtype}; "
            "use images.float() / 255"
        )
    if images.device.type != "cpu":
        # On a device a read of the values would make the host wait for it: the check is
        # queued instead, and a bad batch fails at the next synchronisation.
        lo, hi = torch.aminmax(images.detach())
        bad = (lo < -1e-3) | (hi > 1 + 1e-3)
        torch._assert_async(~bad, "expected image values in [0, 1]; " + RANGE_HINT)
        return
    # One read of both values.
    lo, hi = torch.stack(torch.aminmax(images.detach())).tolist()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"expected values in [0, 1], got [{lo:.3g}, {hi:.3g}]; {RANGE_HINT}")


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A binary float (B, 1, H, W) mask matching ``images``, or a ValueError naming both."""
    b, _, h, w = images.shape
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask)
        raise ValueError(f"expected an edit mask of shape ({b}, 1, {h}, {w}), got {shape}")
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(
            f"edit mask is {tuple(mask.shape)} but the images are {tuple(images.shape)}: "
            f"expected ({b}, 1, {h}, {w}); resize masks with nearest-neighbour interpolation"
        )
    return (mask.to(images.device).float() >= 0.5).float()


class ArtifactSimulator:
    """Composes the artifact families of :class:`SimConfig` on batches of clean images."""

    def __init__(self, cfg: SimConfig, ensure_artifact: bool = False) -> None:
        """``ensure_artifact``: every sample gets at least one artifact family, at full
        strength (evaluation sets, where a clean sample has nothing to fix and an infinite
        PSNR): the training mix (``cfg.mix``) is not used."""
        cfg.validate()
        self.cfg = cfg
        self.ensure_artifact = ensure_artifact
        # The texture family loads its latent codec on first need, not here.
        self.families = tuple(kind(getattr(cfg, kind.key)) for kind in FAMILY_TYPES)

    def sample_params(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> SimParams:
        """Every random choice for a batch, drawn on the CPU in a fixed order."""
        c, b, g = self.cfg, batch_size, generator
        params = {
            "mask": sample_mask_params(b, height, width, c.mask, g),
            "boundary": sample_boundary_params(b, c.boundary, g),
        }
        for family in self.families:
            params[family.key] = family.sample(b, height, width, g)
        if self.ensure_artifact:
            fallback = params[FALLBACK_FAMILY]
            fallback["applied"] = fallback["applied"] | ~self.any_applied(params)
        # Drawn last, so the mix's settings never change what the families draw.
        mix = MixConfig() if self.ensure_artifact else c.mix
        params["mix"] = sample_mix_params(b, mix, g)
        switch_off_families(params)
        return params

    @staticmethod
    def any_applied(params: SimParams) -> torch.Tensor:
        """Per sample: did any artifact family fire?"""
        flags = [p["applied"] for p in params.values() if "applied" in p]
        return torch.stack(flags).any(dim=0)

    def plan(self, params: SimParams, height: int, width: int, *, rasterize: bool = True) -> dict:
        """The CPU-side part of :meth:`apply`: every decision that reads a drawn value, and
        the tensors the device part needs, for one copy (``rasterize=False``: the mask is
        given, the drawn one is not needed)."""
        m = self.cfg.mask
        masks = plan_masks(params["mask"], height, width, m.raster_size, mask_dir=m.mask_dir)
        return {
            "mask": masks if rasterize else None,
            "alpha": plan_alpha(params["boundary"], grow=True),
            "families": {f.key: f.plan(params[f.key], height, width) for f in self.families},
            "mix": plan_mix(params["mix"]),
        }

    @torch.no_grad()
    def run(
        self, images: torch.Tensor, params: SimParams, plan: dict, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The device part of :meth:`apply`, given :meth:`plan`'s output on the images'
        device: no host read and no copy from the host (on CUDA, no wait for the device)."""
        target = images.float().clamp(0, 1)  # a tensor of our own: families write into it
        _, _, h, w = target.shape
        if mask is not None:
            mask = check_mask(mask, target)
        # Autocast off: colour maths in bf16/fp16 produces the drift we are trying to model.
        with torch.autocast(target.device.type, enabled=False):
            for family in self.families:
                key = family.key
                target = family.run_outside(
                    target, params[key], plan["families"][key], inplace=True
                )
            if mask is None:
                mask = run_masks(plan["mask"], h, w, target.device)
            alpha = run_alpha(mask, plan["alpha"])
            edited = target.clone()
            for family in self.families:
                key = family.key
                edited = family.run(edited, params[key], plan["families"][key], mask, inplace=True)
            edited = run_mix(edited, target, plan["mix"])
            # target + alpha * (edited - target), written into edited.
            composite = edited.sub_(target).mul_(alpha).add_(target)
        return {"target": target, "composite": composite, "mask": mask, "alpha": alpha}

    def apply(
        self, images: torch.Tensor, params: SimParams, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Deterministic part: the batch dict for ``images`` under ``params``. A given edit
        ``mask`` (B, 1, H, W), binarised at 0.5, replaces the drawn one.

        :meth:`plan` on the CPU, its tensors moved to the images' device in one copy, then
        :meth:`run` there."""
        check_images(images)
        h, w = images.shape[-2:]
        plan = self.plan(params, h, w, rasterize=mask is None)
        return self.run(images, params, to_device(plan, images.device), mask)

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | int,
        mask: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], SimParams]:
        """Simulate artifacts on ``images``; ``generator`` may be a seed; ``mask`` optionally
        fixes the edit masks (the drawn mask parameters are then unused)."""
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            check_images(images)  # the shape is needed here; apply checks the values
        b, _, h, w = images.shape
        params = self.sample_params(b, h, w, generator)
        return self.apply(images, params, mask), params


def family_names(params: SimParams, index: int) -> list[str]:
    """The artifact families applied to sample ``index``, in :data:`FAMILIES` order; empty
    for a clean sample."""
    if is_clean(params, index):
        return []
    names = {
        label
        for kind in FAMILY_TYPES
        if kind.key in params
        for label in kind.labels(params[kind.key], index)
    }
    return [name for name in FAMILIES if name in names]


def describe(params: SimParams, index: int) -> str:
    """One line naming the families applied to sample ``index`` and their key values."""
    if is_clean(params, index):
        return "clean (no artifact)"
    parts = [
        describe_mask(params["mask"], index),
        describe_boundary(params["boundary"], index),
    ]
    for kind in FAMILY_TYPES:
        family = params[kind.key]
        if bool(family["applied"][index]):
            parts.append(kind.describe(family, index))
    nearly_right = describe_mix(params, index)
    if nearly_right:
        parts.append(nearly_right)
    return ", ".join(parts)
