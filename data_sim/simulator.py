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

The families take ``inplace=True`` on the tensors the simulator owns (its clamped copy of the
input, the content fill's result): on a CPU a fresh full-batch tensor costs page faults worth
as much as the arithmetic, and a batch of 16 allocated ~100 MB per call before this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from data_sim.colour import ColourShiftConfig, apply_colour_shift, sample_colour_params
from data_sim.inpaint import (
    ContentDiscontinuityConfig,
    apply_content_discontinuity,
    sample_content_params,
)
from data_sim.masks import (
    MASK_KINDS,
    BoundaryConfig,
    MaskConfig,
    compositing_alpha,
    rasterize_masks,
    sample_boundary_params,
    sample_mask_params,
)
from data_sim.misalign import (
    MisalignConfig,
    apply_misalignment,
    mask_centre,
    sample_misalign_params,
)
from data_sim.mix import (
    CLEAN,
    NEARLY_RIGHT,
    MixConfig,
    sample_mix_params,
    scale_edits_,
    switch_off_families,
)
from data_sim.texture import TextureConfig, TextureFamily

Params = dict[str, dict[str, torch.Tensor]]


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
        for section in (self.mask, self.boundary, self.content, self.misalign, self.colour):
            section.validate()
        self.texture.validate()
        self.mix.validate()


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
    # One read of both values: on a GPU each read of a tensor value waits for the device.
    lo, hi = torch.stack(torch.aminmax(images.detach())).tolist()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"expected values in [0, 1], got [{lo:.3g}, {hi:.3g}]; divide 8-bit data by 255 "
            "(16-bit by 65535), or map [-1, 1] data with (x + 1) / 2"
        )


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
        self.texture = TextureFamily(cfg.texture)  # loads its latent codec on first need

    def sample_params(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params:
        """Every random choice for a batch, drawn on the CPU in a fixed order."""
        c = self.cfg
        params = {
            "mask": sample_mask_params(batch_size, height, width, c.mask, generator),
            "boundary": sample_boundary_params(batch_size, c.boundary, generator),
            "content": sample_content_params(batch_size, c.content, generator),
            "misalign": sample_misalign_params(batch_size, c.misalign, generator),
            "colour": sample_colour_params(batch_size, height, width, c.colour, generator),
            "texture": self.texture.sample_params(batch_size, generator),
        }
        if self.ensure_artifact:
            params["colour"]["applied"] = params["colour"]["applied"] | ~self.any_applied(params)
        # Drawn last: a recipe without the mix draws every family as before it existed.
        mix = MixConfig() if self.ensure_artifact else c.mix
        params["mix"] = sample_mix_params(batch_size, mix, generator)
        switch_off_families(params)
        return params

    @staticmethod
    def any_applied(params: Params) -> torch.Tensor:
        """Per sample: did any artifact family fire?"""
        flags = [p["applied"] for p in params.values() if "applied" in p]
        return torch.stack(flags).any(dim=0)

    @torch.no_grad()
    def apply(
        self, images: torch.Tensor, params: Params, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Deterministic part: the batch dict for ``images`` under ``params``. A given edit
        ``mask`` (B, 1, H, W), binarised at 0.5, replaces the drawn one."""
        check_images(images)
        clean = images.float().clamp(0, 1)
        b, _, h, w = clean.shape
        if mask is not None:
            mask = check_mask(mask, clean)
        # Autocast off: colour maths in bf16/fp16 produces the drift we are trying to model.
        with torch.autocast(clean.device.type, enabled=False):
            target = self.texture.outside(clean, params["texture"], inplace=True)
            if mask is None:
                mask = rasterize_masks(
                    params["mask"],
                    h,
                    w,
                    clean.device,
                    self.cfg.mask.raster_size,
                    mask_dir=self.cfg.mask.mask_dir,
                )
            alpha = compositing_alpha(mask, params["boundary"], grow=True)
            edited = apply_content_discontinuity(target, mask, params["content"])
            # Rotate and scale about the edit, not the image centre: the misalignment of a
            # pasted region is local. The pivot is recorded so the sample can be replayed.
            params["misalign"]["centre"] = mask_centre(mask).cpu()
            edited = apply_misalignment(edited, params["misalign"], inplace=True)
            edited = apply_colour_shift(edited, params["colour"], inplace=True)
            edited = self.texture.inside(edited, params["texture"], inplace=True)
            if "mix" in params:  # parameters stored before the mix existed have none
                edited = scale_edits_(edited, target, params["mix"])
            # target + alpha * (edited - target), written into edited.
            composite = edited.sub_(target).mul_(alpha).add_(target)
        return {"target": target, "composite": composite, "mask": mask, "alpha": alpha}

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | int,
        mask: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], Params]:
        """Simulate artifacts on ``images``; ``generator`` may be a seed; ``mask`` optionally
        fixes the edit masks (the drawn mask parameters are then unused)."""
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            check_images(images)  # the shape is needed here; apply checks the values
        b, _, h, w = images.shape
        params = self.sample_params(b, h, w, generator)
        return self.apply(images, params, mask), params


FAMILIES = ("colour", "texture", "codec", "content", "misalign")


def family_names(params: Params, index: int) -> list[str]:
    """The artifact families applied to sample ``index``, in :data:`FAMILIES` order
    (``codec``: the latent round trip of the texture family); empty for a clean sample."""
    mix = params.get("mix")
    if mix is not None and int(mix["kind"][index]) == CLEAN:
        return []
    texture = params["texture"]
    applied = {
        "colour": bool(params["colour"]["applied"][index]),
        "texture": bool(texture["applied"][index]),
        "codec": bool(texture["applied"][index]) and bool(texture["vae"][index]),
        "content": bool(params["content"]["applied"][index]),
        "misalign": bool(params["misalign"]["applied"][index]),
    }
    return [name for name in FAMILIES if applied[name]]


def describe(params: Params, index: int) -> str:
    """One line naming the families applied to sample ``index`` and their key values."""
    parts = []
    m = params["mask"]
    kind = MASK_KINDS[int(m["kind"][index])]
    if int(m["latent_cell"][index]):
        kind += f" (latent {int(m['latent_cell'][index])}px)"
    parts.append(kind)
    bd = params["boundary"]
    paste = (
        "hard" if bool(bd["hard"][index]) else f"feather {float(bd['feather_sigma'][index]):.1f}px"
    )
    parts.append(f"{paste} grow {float(bd['grow'][index]):+.1f}px")
    ct = params["content"]
    if bool(ct["applied"][index]):
        parts.append(f"content widen {float(ct['widen_px'][index]):.0f}px")
    ma = params["misalign"]
    if bool(ma["applied"][index]):
        dx, dy = (float(v) for v in ma["shift"][index])
        parts.append(
            f"misalign ({dx:+.1f},{dy:+.1f})px {float(ma['angle'][index]):+.1f}deg "
            f"x{float(ma['scale'][index]):.3f}"
            + (" warp" if bool(ma["warp"][index].abs().max() > 0) else "")
        )
    t = params["texture"]
    if bool(t["applied"][index]):
        text = f"texture blur {float(t['blur_sigma'][index]):.1f}px"
        text += " vae" if bool(t["vae"][index]) else ""
        if bool(t["jpeg"][index]):
            text += f", original jpeg q{float(t['jpeg_quality'][index]):.0f}"
        parts.append(text)
    c = params["colour"]
    if bool(c["applied"][index]):
        parts.append(
            "colour b{:+.2f} c{:.2f} s{:.2f} h{:+.3f} g{:.2f}".format(
                *(
                    float(c[k][index])
                    for k in ("brightness", "contrast", "saturation", "hue", "gamma")
                )
            )
        )
    mix = params.get("mix")
    if mix is not None and int(mix["kind"][index]) == CLEAN:
        return "clean (no artifact)"
    if mix is not None and int(mix["kind"][index]) == NEARLY_RIGHT:
        parts.append(f"nearly right x{float(mix['strength'][index]):.2f}")
    return ", ".join(parts)
