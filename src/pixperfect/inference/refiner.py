"""The ``Refiner``: a trained generator plus what it takes to run it on real images
(padding to the network stride, any size, mode and bit depth in, the same out)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pixperfect.config import from_container
from pixperfect.imageio import Image, from_rgb_float, read_image, to_rgb_float, write_image
from pixperfect.models import build_refiner

MASK_THRESHOLD = 0.5  # mask pixels at or above half of full scale are "edited"


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) on the bottom/right to multiples of ``multiple``; returns the
    padded tensor and the original (H, W) to crop back to."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # Reflection needs pad < size; replicate covers tiny images.
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class Refiner:
    """A trained refiner, ready to apply: ``Refiner.from_checkpoint(path)(image, mask)``."""

    def __init__(self, model: torch.nn.Module, config: dict, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.config = config
        self.device = torch.device(device)
        self.stride = getattr(model, "stride", 1)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Refiner:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint {path} does not exist; train one with `pixperfect train` (it "
                "writes runs/<name>/checkpoints/last.ckpt)"
            )
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        try:
            config = ckpt["hyper_parameters"]["config"]
        except KeyError:
            raise ValueError(f"{path} is not a PixPerfect training checkpoint") from None
        model_cfg = dict(from_container(config).model)
        model = build_refiner(model_cfg.pop("name"), **model_cfg)
        # The EMA weights when the run kept them: they are what validation scored.
        has_ema = any(k.startswith("generator_ema.") for k in ckpt["state_dict"])
        prefix = "generator_ema." if has_ema else "generator."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        model.load_state_dict(state)
        return cls(model, config, device)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Refine ``image`` (3, H, W) or (B, 3, H, W) in [0, 1] given the edit ``mask``
        (1, H, W) or (B, 1, H, W) in {0, 1}; any H, W."""
        single = image.ndim == 3
        if single:
            image, mask = image[None], mask[None]
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                f"{image.shape[-1]}x{image.shape[-2]} (width x height); they must match"
            )
        x, (h, w) = pad_to_multiple(image.to(self.device, torch.float32), self.stride)
        m, _ = pad_to_multiple(mask.to(self.device, torch.float32), self.stride)
        out = self.model(x, m)[..., :h, :w].clamp(0, 1).to(image.device)
        return out[0] if single else out


def read_mask(path: str | Path, like: Image, image_path: str | Path) -> torch.Tensor:
    """Binary (1, H, W) mask from any image file; refuses a size that differs from the image."""
    mask = read_image(path)
    if mask.size != like.size:
        raise ValueError(
            f"mask {path} is {mask.size[0]}x{mask.size[1]} but image {image_path} is "
            f"{like.size[0]}x{like.size[1]} (width x height); resize the mask with nearest "
            "neighbour interpolation to the image size"
        )
    grey = to_rgb_float(mask.pixels if mask.channels != 4 else mask.pixels[..., :3]).mean(0)
    return (grey >= MASK_THRESHOLD).float()[None]


def refine_file(
    refiner: Refiner, image_path: str | Path, mask_path: str | Path, out_path: str | Path
) -> Path:
    """Refine one image file with its mask file; the output keeps size, mode and bit depth."""
    image = read_image(image_path)
    mask = read_mask(mask_path, image, image_path)
    refined = refiner(to_rgb_float(image.pixels), mask)
    write_image(out_path, from_rgb_float(refined, like=image))
    return Path(out_path)
