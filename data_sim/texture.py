"""Texture mismatch (docs/method.md §5.2): the edited region and the background carry
different textures.

This module owns the texture family: its config (:class:`TextureConfig`, :class:`VAEConfig`),
the per-sample parameter draw (:func:`sample_texture_params`), the two deterministic image
transforms and :class:`TextureFamily`, which builds the latent codec lazily from the config.

* Inside (what a latent editor decodes): Gaussian smoothing, a VAE encode/decode round trip
  and the editor's own noise, :func:`apply_texture_inside`.
* Outside (the user's original photo): sensor-like noise, then JPEG compression at a random
  quality (libjpeg's baseline codec, :mod:`data_sim.jpeg`), :func:`apply_texture_outside`.

The simulator uses the first inside the compositing alpha and the second outside it. Both run
batched on the images' device and touch only the ``applied`` samples: the others come back
bit-exactly unchanged, and the cost of every step (the VAE above all) follows its probability.

Noise: the params hold a per-sample integer ``noise_seed`` drawn on the CPU; the noise of a
call comes from one ``torch.Generator`` on the images' device seeded from the applied samples'
seeds. It is reproducible on a given device type, but CPU and CUDA give different noise
realisations (same distribution), and a sample's noise depends on which samples share its
batch. A per-sample counter hash would avoid both but costs ~10x more than ``torch.randn``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from data_sim.blur import gaussian_blur2d
from data_sim.codecs import CODEC_KINDS, LatentCodec, build_codec
from data_sim.errors import SimConfigError
from data_sim.family import Params, PlannedFamily
from data_sim.jpeg import jpeg_roundtrip, plan_jpeg
from data_sim.sampling import (
    applied_indices,
    bernoulli,
    check_range,
    derive_seed,
    device_generator,
    randint,
    uniform,
)
from data_sim.transfer import to_device

__all__ = [
    "TextureConfig",
    "TextureFamily",
    "VAEConfig",
    "apply_texture",
    "apply_texture_inside",
    "apply_texture_outside",
    "load_codec",
    "sample_texture_params",
]

# Below this sigma a Gaussian kernel is the identity in float32 (its side taps underflow);
# those samples skip the blur (their kernel would be the identity anyway).
MIN_BLUR_SIGMA = 0.05


@dataclass
class VAEConfig:
    """The latent codec of the inside round trip (see :func:`data_sim.codecs.build_codec`)."""

    # "none" by default: no codec ships with pip packages. Experiment files that train the
    # paper's recipe set kind=taesd and a path (configs/kodak_cpu.yaml uses TAEF2).
    kind: str = "none"  # "taesd" | "diffusers" | "none"
    path: str | None = None  # folder (or hub id for diffusers) with the weights
    variant: str = "taef2"  # taesd only: <variant>_encoder.pth / <variant>_decoder.pth
    chunk_size: int = 8  # images per codec call: bounds the codec's activation memory
    p: float = 1.0  # share of texture samples that get the round trip

    def validate(self, name: str = "sim.texture.vae") -> None:
        if str(self.kind).strip().lower() not in CODEC_KINDS:
            raise SimConfigError(f"{name}.kind={self.kind!r} is not one of {CODEC_KINDS}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise SimConfigError(f"{name}.chunk_size={self.chunk_size!r} must be a positive int")
        check_range(f"{name}.chunk_size", (self.chunk_size, self.chunk_size), 1, 1 << 16)
        check_range(f"{name}.p", (self.p, self.p), 0, 1)

    @property
    def enabled(self) -> bool:
        return str(self.kind).strip().lower() != "none"


@dataclass
class TextureConfig:
    p: float = 0.5
    vae: VAEConfig = field(default_factory=VAEConfig)
    # Inside: generated content is smoother than a photo; a small blur before the round trip.
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # px; < MIN_BLUR_SIGMA means no blur
    inside_noise_sigma: tuple[float, float] = (0.0, 0.02)  # std on [0, 1] values
    inside_noise_luma_p: float = 0.5  # luminance-only noise (same on R, G, B) vs per-channel
    # Outside: the user's photo, with its own sensor noise and usually JPEG compression.
    outside_noise_sigma: tuple[float, float] = (0.0, 0.015)
    outside_noise_luma_p: float = 0.5
    jpeg_p: float = 0.7
    jpeg_quality: tuple[float, float] = (40.0, 95.0)

    def validate(self, name: str = "sim.texture") -> None:
        check_range(f"{name}.p", (self.p, self.p), 0, 1)
        self.vae.validate(f"{name}.vae")
        check_range(f"{name}.blur_sigma", self.blur_sigma, 0, 16)
        check_range(f"{name}.inside_noise_sigma", self.inside_noise_sigma, 0, 1)
        check_range(f"{name}.inside_noise_luma_p", (self.inside_noise_luma_p,) * 2, 0, 1)
        check_range(f"{name}.outside_noise_sigma", self.outside_noise_sigma, 0, 1)
        check_range(f"{name}.outside_noise_luma_p", (self.outside_noise_luma_p,) * 2, 0, 1)
        check_range(f"{name}.jpeg_p", (self.jpeg_p, self.jpeg_p), 0, 1)
        # libjpeg's range: 1 (coarsest) to 100 (all steps 1, near-lossless). Rounded per image.
        check_range(f"{name}.jpeg_quality", self.jpeg_quality, 1, 100)


def sample_texture_params(
    batch_size: int, cfg: TextureConfig, generator: torch.Generator
) -> Params:
    """Draw per-sample parameters on the CPU; every entry has leading dimension ``batch_size``.

    Keys: ``applied`` bool; ``vae`` bool (round trip, only where applied and a codec is
    configured); ``blur_sigma`` float px; ``inside_noise_sigma`` float; ``inside_noise_luma``
    bool; ``jpeg`` bool (only where applied); ``jpeg_quality`` float; ``outside_noise_sigma``
    float; ``outside_noise_luma`` bool; ``noise_seed`` int64. Every value is drawn whatever the
    config switches off, so the draw order (and every other family's params) stays the same.
    """
    b = batch_size
    applied = bernoulli(generator, b, cfg.p)
    vae = bernoulli(generator, b, cfg.vae.p) & applied & cfg.vae.enabled
    return {
        "applied": applied,
        "vae": vae,
        "blur_sigma": uniform(generator, b, *cfg.blur_sigma),
        "inside_noise_sigma": uniform(generator, b, *cfg.inside_noise_sigma),
        "inside_noise_luma": bernoulli(generator, b, cfg.inside_noise_luma_p),
        "jpeg": bernoulli(generator, b, cfg.jpeg_p) & applied,
        "jpeg_quality": uniform(generator, b, *cfg.jpeg_quality),
        "outside_noise_sigma": uniform(generator, b, *cfg.outside_noise_sigma),
        "outside_noise_luma": bernoulli(generator, b, cfg.outside_noise_luma_p),
        "noise_seed": randint(generator, b, 0, 2**62),
    }


def load_codec(cfg: VAEConfig) -> LatentCodec | None:
    """The frozen codec named by ``cfg`` on the CPU (``None`` for ``kind="none"``).

    Missing weights raise the codec's FileNotFoundError, which names the files and the
    config key to set.
    """
    kw = {"variant": cfg.variant} if str(cfg.kind).strip().lower() == "taesd" else {}
    return build_codec(cfg.kind, cfg.path, **kw)


def plan_noise(params: Params, idx: torch.Tensor, side: str) -> dict:
    """The CPU-side part of the ``side`` ("inside" or "outside") noise of the applied samples
    ``idx``: the generator's seed (from the samples' seeds and the side, so the inside and
    outside noise are independent), the rows drawn with one channel (luma) and with three,
    and the per-sample std."""
    seeds = params["noise_seed"].cpu()[idx].tolist()
    stream = 0 if side == "inside" else 1
    luma = params[f"{side}_noise_luma"].cpu()[idx]
    groups = []
    for rows, channels in ((luma, 1), (~luma, 3)):
        pos = rows.nonzero().squeeze(1)
        if pos.numel():
            groups.append({"pos": pos, "channels": channels})
    return {
        "seed": derive_seed(stream, *seeds),
        "groups": groups,
        "sigma": params[f"{side}_noise_sigma"].cpu()[idx],
    }


def _add_noise_(x: torch.Tensor, plan: dict) -> torch.Tensor:
    """Add the noise of :func:`plan_noise` to the applied samples' rows ``x``, in place
    (callers pass a fresh copy), and clamp to [0, 1]. In place because this is
    memory-bound: each full-batch temporary costs as much as the arithmetic.

    Gaussian, of per-sample std ``<side>_noise_sigma``; ``<side>_noise_luma`` samples get the
    same noise on every channel (grain in brightness only), the others independent colour
    noise, from one generator on ``x``'s device."""
    generator = device_generator(x.device, plan["seed"])
    # Luma samples draw one channel, not three: torch.randn is the costliest op per value here.
    noise = torch.empty_like(x)
    for group in plan["groups"]:
        pos = group["pos"]
        shape = (pos.shape[0], group["channels"], *x.shape[2:])
        draw = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        noise[pos] = draw.expand(-1, 3, -1, -1)
    noise.mul_(plan["sigma"].to(dtype=x.dtype)[:, None, None, None])
    return x.add_(noise).clamp_(0, 1)


def _flagged_positions(params: Params, idx: torch.Tensor, key: str) -> dict | None:
    """Where the samples whose bool ``params[key]`` is set sit within the applied samples
    ``idx`` (``pos``), and their sample indices (``samples``); None when there are none."""
    flagged = applied_indices(params, key)
    if flagged.numel() == 0:
        return None
    return {"pos": torch.searchsorted(idx, flagged), "samples": flagged}


def _plan_blur(sigma: torch.Tensor) -> dict | None:
    """Per-sample Gaussian blur: the clamped sigmas, which samples are blurred (those with
    ``sigma >= MIN_BLUR_SIGMA``) and the kernel size; None when none is."""
    active = sigma >= MIN_BLUR_SIGMA
    if not bool(active.any()):
        return None
    s = sigma.clamp_min(MIN_BLUR_SIGMA)
    # One kernel size for the batch, 4 sigma of the widest blur on each side: the tail it cuts
    # (< 1e-4 of the mass) is too small for a sample's result to depend on its batch mates.
    return {"sigma": s, "active": active, "size": 2 * math.ceil(4 * float(s[active].max())) + 1}


def _blur(x: torch.Tensor, plan: dict | None) -> torch.Tensor:
    """The blur of :func:`_plan_blur`; unblurred samples are left as they are."""
    if plan is None:
        return x
    k, s = plan["size"], plan["sigma"].to(x.dtype)
    blurred = gaussian_blur2d(x, (k, k), s[:, None].expand(-1, 2), border_type="reflect")
    return torch.where(plan["active"][:, None, None, None], blurred, x)


def plan_texture_inside(params: Params) -> dict | None:
    """The CPU-side part of :func:`apply_texture_inside` (None: no sample is applied)."""
    idx = applied_indices(params)
    if idx.numel() == 0:
        return None
    return {
        "idx": idx,
        "blur": _plan_blur(params["blur_sigma"].cpu()[idx].float()),
        "vae": _flagged_positions(params, idx, "vae"),
        "noise": plan_noise(params, idx, "inside"),
    }


def plan_texture_outside(params: Params) -> dict | None:
    """The CPU-side part of :func:`apply_texture_outside` (None: no sample is applied)."""
    idx = applied_indices(params)
    if idx.numel() == 0:
        return None
    jpeg = _flagged_positions(params, idx, "jpeg")
    if jpeg is not None:
        quality = params["jpeg_quality"].cpu()[jpeg.pop("samples")]
        jpeg.update(quality=quality, tables=plan_jpeg(quality))
    return {"idx": idx, "noise": plan_noise(params, idx, "outside"), "jpeg": jpeg}


@torch.no_grad()
def run_texture_inside(
    images: torch.Tensor,
    plan: dict | None,
    codec: LatentCodec | None = None,
    chunk_size: int = 8,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """The device part of :func:`apply_texture_inside` (``plan`` from
    :func:`plan_texture_inside`, on the images' device): no host read."""
    out = images if inplace else images.clone()
    if plan is None:
        return out
    vae = plan["vae"]
    if vae is not None and codec is None:
        raise ValueError(
            f"apply_texture_inside: the params ask for a VAE round trip on "
            f"{vae['pos'].shape[0]} samples but no codec was given; build one with "
            "load_codec(cfg.vae) (or TextureFamily), or set sim.texture.vae.kind='none'"
        )
    idx = plan["idx"]
    x = _blur(images.index_select(0, idx), plan["blur"])
    if vae is not None:
        pos = vae["pos"]
        x = x.index_copy(0, pos, codec.roundtrip(x.index_select(0, pos), chunk_size))
    x = _add_noise_(x, plan["noise"])
    return out.index_copy_(0, idx, x.to(images.dtype))


@torch.no_grad()
def apply_texture_inside(
    images: torch.Tensor,
    params: Params,
    codec: LatentCodec | None = None,
    chunk_size: int = 8,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """The editor-side texture: blur, VAE round trip (``vae`` samples), own noise.

    Returns a new (B, 3, H, W) tensor in [0, 1] (``images`` itself with ``inplace``); samples
    not ``applied`` are bit-exact copies.
    The blur comes first because generated content lacks a photo's fine detail; the decoder
    then lays its own texture over it, as in a real edit; the noise is the editor's grain.
    """
    plan = to_device(plan_texture_inside(params), images.device)
    return run_texture_inside(images, plan, codec, chunk_size, inplace=inplace)


@torch.no_grad()
def run_texture_outside(
    images: torch.Tensor, plan: dict | None, *, inplace: bool = False
) -> torch.Tensor:
    """The device part of :func:`apply_texture_outside` (``plan`` from
    :func:`plan_texture_outside`, on the images' device): no host read."""
    out = images if inplace else images.clone()
    if plan is None:
        return out
    idx = plan["idx"]
    x = _add_noise_(images.index_select(0, idx), plan["noise"])
    jpeg = plan["jpeg"]
    if jpeg is not None:
        pos = jpeg["pos"]
        coded = jpeg_roundtrip(x.index_select(0, pos), jpeg["quality"], jpeg["tables"])
        x = x.index_copy(0, pos, coded)
    return out.index_copy_(0, idx, x.to(images.dtype))


@torch.no_grad()
def apply_texture_outside(
    images: torch.Tensor, params: Params, *, inplace: bool = False
) -> torch.Tensor:
    """The background-side texture: own sensor-like noise, then JPEG (``jpeg`` samples).

    Returns a new (B, 3, H, W) tensor in [0, 1] (``images`` itself with ``inplace``); samples
    not ``applied`` are bit-exact copies.
    Noise comes before the JPEG, as in a camera, so the codec shapes it into block texture.
    """
    plan = to_device(plan_texture_outside(params), images.device)
    return run_texture_outside(images, plan, inplace=inplace)


def apply_texture(
    images: torch.Tensor,
    params: Params,
    codec: LatentCodec | None = None,
    *,
    background: torch.Tensor | None = None,
    chunk_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inside, outside)``: the editor-side texture of ``images`` and the background-side
    texture of ``background`` (default: ``images``), for ``alpha * inside + (1 - alpha) *
    outside``. Samples not ``applied`` come back unchanged in both."""
    outside_src = images if background is None else background
    return (
        apply_texture_inside(images, params, codec, chunk_size),
        apply_texture_outside(outside_src, params),
    )


_UNSET = object()


class TextureFamily(PlannedFamily[TextureConfig]):
    """The texture family with its codec: built from the config on first need, moved to the
    images' device on use, and never at import or construction time. Its ``apply`` is the
    editor's side (:meth:`inside`), its ``outside`` the user's photo.

    ``codec`` may be given to share one codec between families or to inject a test double.
    """

    key = "texture"

    def __init__(self, cfg: TextureConfig, codec: LatentCodec | None | object = _UNSET) -> None:
        super().__init__(cfg)
        self._codec = codec

    @property
    def codec(self) -> LatentCodec | None:
        """The latent codec (loaded now if not yet); ``None`` when ``vae.kind == "none"``."""
        if self._codec is _UNSET:
            self._codec = load_codec(self.cfg.vae)
        return self._codec  # type: ignore[return-value]

    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> Params:
        return sample_texture_params(batch_size, self.cfg, generator)

    def _codec_on(self, device: torch.device) -> LatentCodec | None:
        codec = self.codec
        if codec is not None and codec._compute_device(device) != device:
            # Moved once; roundtrip would also accept a codec elsewhere, but would copy every
            # chunk across devices.
            codec.to(device)
        return codec

    def plan(self, params: Params, height: int, width: int) -> dict:
        return {"inside": plan_texture_inside(params), "outside": plan_texture_outside(params)}

    def run(
        self, images: torch.Tensor, params: Params, plan: dict, mask: torch.Tensor, *,
        inplace: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The editor's side: :func:`run_texture_inside` with this family's codec."""
        inside = plan["inside"]
        # Only touch (and load) the codec when some sample needs the round trip.
        need_vae = inside is not None and inside["vae"] is not None
        codec = self._codec_on(images.device) if need_vae else None
        return run_texture_inside(images, inside, codec, self.cfg.vae.chunk_size, inplace=inplace)

    def run_outside(
        self, images: torch.Tensor, params: Params, plan: dict, *, inplace: bool = False
    ) -> torch.Tensor:
        return run_texture_outside(images, plan["outside"], inplace=inplace)

    def inside(
        self, images: torch.Tensor, params: Params, *, inplace: bool = False
    ) -> torch.Tensor:
        """:func:`apply_texture_inside` with this family's codec."""
        plan = self._moved_plan(images, params)
        return self.run(images, params, plan, None, inplace=inplace)  # no mask: not read

    def __call__(
        self, images: torch.Tensor, params: Params, background: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inside, outside)`` as :func:`apply_texture`."""
        outside_src = images if background is None else background
        return self.inside(images, params), self.outside(outside_src, params)

    @classmethod
    def describe(cls, params: Params, index: int) -> str:
        text = f"texture blur {float(params['blur_sigma'][index]):.1f}px"
        text += " vae" if bool(params["vae"][index]) else ""
        if bool(params["jpeg"][index]):
            text += f", original jpeg q{float(params['jpeg_quality'][index]):.0f}"
        return text

    @classmethod
    def labels(cls, params: Params, index: int) -> list[str]:
        """``texture``, and ``codec`` too when the sample has the latent round trip."""
        if not bool(params["applied"][index]):
            return []
        return ["texture", "codec"] if bool(params["vae"][index]) else ["texture"]
