"""The ``Refiner``: a trained generator plus what it takes to apply it to a real edit.

What a call may change (``paste="band"``, the default): the pixels of the edit mask and
those within ``reach = spill + band + feather`` px of it (Euclidean distance to the nearest
mask pixel); every pixel farther out is the input's, byte for byte. By default that is 3 px
(``band=2`` at full weight, a ``feather=1`` px falloff, ``spill=0``): the width of the seam a
hard paste-back leaves, on the photo's side. A photo's pixels outside the edit are not
guessed at: the refiner cannot tell a pixel the editor's paste spilled onto from an
original one, so it changes none of them unless told, with ``spill=PX`` when the editor
feathered or dilated its paste PX px past the mask (those pixels are then refined at full
weight, like the mask), or with a wider ``band``/``feather``. ``paste="crop"`` pastes the
whole refined crop (``margin`` px and more around the mask's bounding box).

``Refiner.from_pretrained(folder)(image, mask)`` (or ``from_checkpoint(ckpt)``):

1. **Crop.** Only the mask's bounding box grown by ``margin`` px (default 64) is refined,
   so the cost follows the size of the edit, not of the photo, and only that crop is ever
   converted to float. 64 px = the default U-Net's receptive radius (38 px at depth 3: a
   69 px field, measured by back-propagating from one output pixel) plus room for a reach
   of up to 26 px, so every pasted pixel sees the same neighbourhood as if the whole
   photo had been refined. (The FFC model's receptive field is global: any crop is an
   approximation there; raise ``margin`` for more context.) The crop is grown with real
   pixels to the network stride where the photo allows, and reflection-padded otherwise.
2. **Tiles.** A crop larger than ``tile_size`` (default 1024) in either side is refined in
   overlapping tiles (``tile_overlap``, default 128 px, over three receptive radii)
   blended with smooth weights (:mod:`pixperfect.inference.tiling`), which bounds memory.
3. **Pooling** (optional, ``pooling=N``; 1 = off): :mod:`pixperfect.inference.pooling`.
4. **Paste back.** ``paste="band"`` (default): the refined pixels at full weight inside
   the mask grown by ``spill + band`` px, falling off along a cosine over the next
   ``feather`` px, the input's exact pixels beyond (see above). The network always sees
   the mask as given; ``spill`` only widens what is pasted. ``paste="crop"``: the whole
   refined crop.

Inputs and outputs: a PIL image (modes L, RGB, RGBA, I;16, I), a numpy array (H, W),
(H, W, 3) or (H, W, 4) of uint8/uint16, an :class:`~pixperfect.imageio.Image`, or a float
tensor (3, H, W) / (B, 3, H, W) in [0, 1]; the result has the input's type, size, mode and
bit depth, and alpha is carried over untouched. The mask may be any of these kinds too
(grey or colour; binarised at :data:`MASK_THRESHOLD` of full scale) and must have the
image's size. An empty mask returns the input unchanged, with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imageops.padding import pad_to_multiple
from pixperfect.errors import InputError
from pixperfect.imageio import Image, from_rgb_float, to_rgb_float
from pixperfect.inference.crop import (
    MASK_THRESHOLD,
    Box,
    binarize_mask,
    expand_box,
    mask_box,
    paste_weights,
)
from pixperfect.inference.export import (
    build_model,
    generator_state,
    load_checkpoint,
    load_export,
    model_section,
)
from pixperfect.inference.pooling import POOLING_MODES, pool_refinements
from pixperfect.inference.pretrained import default_model_dir
from pixperfect.inference.tiling import run_tiled
from pixperfect.models.colour_prior import apply_colour_prior

DEFAULT_MARGIN = 64
# What refine may change by default: the mask and 3 px around it (module docstring).
DEFAULT_BAND = 2
DEFAULT_FEATHER = 1
DEFAULT_SPILL = 0
DEFAULT_TILE_SIZE = 1024
DEFAULT_TILE_OVERLAP = 128
PASTE_MODES = ("band", "crop")
PIL_MODES = ("L", "RGB", "RGBA", "I;16", "I")

__all__ = ["MASK_THRESHOLD", "Refiner", "pad_to_multiple"]


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.")


def _pil_pixels(image: Any) -> np.ndarray:
    if image.mode not in PIL_MODES:
        raise InputError(
            f"PIL mode {image.mode} is not supported ({', '.join(PIL_MODES)}); convert it "
            "first, e.g. image.convert('RGB')"
        )
    pixels = np.asarray(image)
    if image.mode in ("I;16", "I"):
        pixels = pixels.clip(0, 65535).astype(np.uint16)
    return pixels


def _pil_like(pixels: np.ndarray, like: Any, given: np.ndarray) -> Any:
    """``pixels`` (refined from ``given``, the 16-bit pixels of ``like``) as an image of
    ``like``'s mode. Mode I (32-bit) pixels the refiner left alone keep their values, even
    outside the 16-bit range it works in."""
    from PIL import Image as PILImage

    if like.mode != "I":
        return PILImage.fromarray(pixels)
    return PILImage.fromarray(np.where(pixels == given, np.asarray(like), pixels).astype(np.int32))


def _mask_pixels(mask: Any) -> np.ndarray | torch.Tensor:
    if isinstance(mask, Image):
        return mask.pixels
    if _is_pil(mask):
        return _pil_pixels(mask if mask.mode in PIL_MODES else mask.convert("L"))
    return mask


class Refiner:
    """A trained refiner, ready to apply: ``Refiner.from_pretrained(folder)(image, mask)``.

    A call changes only the edit mask and the pixels within :attr:`reach` px of it
    (``spill + band + feather``; 3 px by default); every other pixel of the photo comes
    back byte for byte. ``spill``, ``band`` and ``feather`` widen that on request, and
    ``paste="crop"`` pastes the whole refined crop. See the module docstring for the
    steps and the other options."""

    def __init__(
        self,
        model: nn.Module,
        config: dict | None = None,
        device: str | torch.device = "cpu",
        *,
        margin: int = DEFAULT_MARGIN,
        band: int = DEFAULT_BAND,
        feather: int = DEFAULT_FEATHER,
        spill: int = DEFAULT_SPILL,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        pooling: int = 1,
        pooling_mode: str = "mean",
        paste: str = "band",
        seed: int = 0,
    ) -> None:
        self.model = model.eval().to(device)
        self.config = config or {}
        self.device = torch.device(device)
        self.stride = getattr(model, "stride", 1)
        self.weights = "given"  # which checkpoint weights: "ema" or "raw" when loaded
        self.provenance: dict = {}
        if min(margin, band, feather, spill) < 0:
            raise InputError(
                f"margin={margin}, band={band}, feather={feather}, spill={spill} must be >= 0"
            )
        if paste not in PASTE_MODES:
            raise InputError(f"paste={paste!r} is not one of {', '.join(PASTE_MODES)}")
        if paste == "band" and margin < spill + band + feather:
            raise InputError(
                f"margin={margin} must be at least spill + band + feather = "
                f"{spill + band + feather}: the pasted band and its feather have to end "
                "inside the refined crop"
            )
        if tile_size < self.stride or not 0 <= tile_overlap <= tile_size // 2:
            raise InputError(
                f"tile_size={tile_size} must be >= the network stride {self.stride} and "
                f"tile_overlap={tile_overlap} between 0 and half the tile size"
            )
        if pooling < 1 or pooling_mode not in POOLING_MODES:
            raise InputError(
                f"pooling={pooling} must be >= 1 and pooling_mode={pooling_mode!r} one of "
                f"{', '.join(POOLING_MODES)}"
            )
        self.margin, self.band, self.feather, self.paste = margin, band, feather, paste
        self.spill = spill
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.pooling, self.pooling_mode, self.seed = pooling, pooling_mode, seed

    @property
    def reach(self) -> int | None:
        """How far past the edit mask (px, Euclidean, to the nearest mask pixel) a call may
        change pixels: ``spill + band + feather`` (3 by default); farther pixels keep the
        input's exact values. None with ``paste="crop"`` (the whole crop is pasted)."""
        return None if self.paste == "crop" else self.spill + self.band + self.feather

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        ema: bool = True,
        **options: Any,
    ) -> Refiner:
        """From a Lightning training checkpoint: the generator's EMA weights when the run
        kept them (what validation scored) and ``ema`` is true, the live weights otherwise.
        ``options``: the keyword arguments of :class:`Refiner`."""
        ckpt = load_checkpoint(path)
        config = ckpt["hyper_parameters"]["config"]
        model = build_model(model_section(config))
        weights, which = generator_state(ckpt, ema=ema)
        model.load_state_dict(weights)
        refiner = cls(model, config, device, **options)
        refiner.weights = which
        return refiner

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path | None = None,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> Refiner:
        """From a folder written by ``pixperfect export`` (model.safetensors, config.yaml);
        a folder without them is refused naming the missing file and the export command.
        ``directory`` None: the shipped reference refiner
        (:func:`pixperfect.inference.pretrained.default_model_dir`)."""
        if directory is None:
            directory = default_model_dir()
        model, config, provenance = load_export(directory)
        refiner = cls(model, config, device, **options)
        refiner.weights = provenance.get("weights", "unknown")
        refiner.provenance = provenance
        return refiner

    @torch.inference_mode()
    def network(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The bare network on the whole frame: (B, 3, H, W) in [0, 1] and a (B, 1, H, W)
        {0, 1} mask (or unbatched), padded to the stride; no crop, no tiles, no paste-back."""
        single = image.ndim == 3
        if single:
            image, mask = image[None], mask[None]
        self._check_size(tuple(mask.shape[-2:]), tuple(image.shape[-2:]))
        x, (h, w) = pad_to_multiple(image.to(self.device, torch.float32), self.stride)
        m, _ = pad_to_multiple(mask.to(self.device, torch.float32), self.stride)
        out = self.model(x, m)[..., :h, :w].clamp(0, 1).to(image.device)
        return out[0] if single else out

    @torch.inference_mode()
    def __call__(self, image: Any, mask: Any) -> Any:
        """Refine ``image`` given its edit ``mask``; returns the input's type, size, mode and
        bit depth (module docstring)."""
        if isinstance(image, torch.Tensor):
            return self._refine_tensor(image, mask)
        if isinstance(image, Image):
            return Image(self._refine_pixels(image.pixels, mask))
        if isinstance(image, np.ndarray):
            return self._refine_pixels(image, mask)
        if _is_pil(image):
            given = _pil_pixels(image)
            return _pil_like(self._refine_pixels(given, mask), image, given)
        raise TypeError(
            f"cannot refine a {type(image).__name__}: give a PIL image, a numpy array, a "
            "pixperfect Image or a float tensor (3, H, W)"
        )

    # -- the steps ------------------------------------------------------------------------

    @staticmethod
    def _check_size(mask_hw: tuple[int, ...], image_hw: tuple[int, ...]) -> None:
        if mask_hw != image_hw:
            raise InputError(
                f"mask is {mask_hw[1]}x{mask_hw[0]} but the image is {image_hw[1]}x"
                f"{image_hw[0]} (width x height); they must match"
            )

    def _mask_and_box(self, mask: Any, height: int, width: int) -> tuple[np.ndarray, Box | None]:
        m = binarize_mask(_mask_pixels(mask))
        self._check_size(m.shape, (height, width))
        box = mask_box(m)
        if box is None:
            warnings.warn(
                f"the edit mask is empty (no pixel at or above {MASK_THRESHOLD} of full "
                "scale): nothing to refine, the input is returned unchanged",
                stacklevel=4,
            )
            return m, None
        return m, expand_box(box, self.margin, height, width, self.stride)

    def _weights(self, mask: np.ndarray) -> torch.Tensor:
        if self.paste == "crop":
            return torch.ones(1, *mask.shape)
        weights = paste_weights(mask, self.spill + self.band, self.feather)
        return torch.from_numpy(weights)[None]

    def _refine_crop(
        self, image: torch.Tensor, mask: np.ndarray, weights: torch.Tensor
    ) -> torch.Tensor:
        """The refined (3, h, w) crop (CPU float) of a (3, h, w) float crop and its mask."""
        x = image[None].to(self.device, torch.float32)
        m = torch.from_numpy(mask)[None, None].to(self.device, torch.float32)
        x, (h, w) = pad_to_multiple(x, self.stride)
        m, _ = pad_to_multiple(m, self.stride)
        wts = F.pad(weights[None].to(self.device), (0, x.shape[-1] - w, 0, x.shape[-2] - h))

        prior_kind = getattr(self.model, "colour_prior", "none")

        def run(inp: torch.Tensor) -> torch.Tensor:
            if prior_kind == "none":
                return run_tiled(self.model, inp, m, self.tile_size, self.tile_overlap, self.stride)
            # The colour prior's statistics come from the whole crop, once: computed per tile,
            # a tile inside a large edit would see no surroundings and start from elsewhere.
            both = torch.cat([inp, apply_colour_prior(prior_kind, inp, m)], dim=1)

            def network(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return self.model(x[:, :3], mask, prior=x[:, 3:])

            return run_tiled(network, both, m, self.tile_size, self.tile_overlap, self.stride)

        out = pool_refinements(run, x, m, wts, self.pooling, self.pooling_mode, self.seed)
        return out[0, :, :h, :w].clamp(0, 1).float().cpu()

    def _refine_pixels(self, pixels: np.ndarray, mask: Any) -> np.ndarray:
        if pixels.dtype not in (np.uint8, np.uint16) or not (
            pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))
        ):
            raise InputError(
                f"image array of shape {pixels.shape} and type {pixels.dtype}: expected "
                "(H, W), (H, W, 3) or (H, W, 4) of uint8 or uint16"
            )
        m, box = self._mask_and_box(mask, *pixels.shape[:2])
        if box is None:
            return pixels.copy()
        crop = pixels[box.slices]
        x = to_rgb_float(crop)  # the only float copy: the crop, never the whole photo
        weights = self._weights(m[box.slices])
        blended = torch.lerp(x, self._refine_crop(x, m[box.slices], weights), weights)
        new = from_rgb_float(blended, like=Image(crop)).pixels
        untouched = weights[0].numpy() == 0
        new[untouched] = crop[untouched]  # byte-identical outside the pasted band
        out = pixels.copy()
        out[box.slices] = new
        return out

    def _refine_tensor(self, image: torch.Tensor, mask: Any) -> torch.Tensor:
        if image.ndim == 4:
            if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or len(mask) != len(image):
                raise ValueError("a batch of images (B, 3, H, W) needs masks (B, 1, H, W)")
            pairs = zip(image, mask, strict=True)
            return torch.stack([self._refine_tensor(i, m) for i, m in pairs])
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be (3, H, W) in [0, 1], got {image.shape}")
        m, box = self._mask_and_box(mask, *image.shape[-2:])
        if box is None:
            return image.clone()
        region = (slice(None), *box.slices)
        x = image[region].detach().to("cpu", torch.float32)
        weights = self._weights(m[box.slices])
        blended = torch.lerp(x, self._refine_crop(x, m[box.slices], weights), weights)
        # The input's own values where nothing is pasted (exact for any dtype, not a
        # float32 round trip of them).
        pasted = (weights > 0).to(image.device)
        out = image.clone()
        out[region] = torch.where(pasted, blended.to(image.device, image.dtype), image[region])
        return out
