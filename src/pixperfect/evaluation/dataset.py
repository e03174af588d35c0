"""Evaluation triples (edited image, edit mask, ground truth) read from a folder.

Layout (``pixperfect evaluate --dataset DIR``)::

    DIR/edited/<stem>.<ext>   the editor's pasted-back output (the composite)
    DIR/mask/<stem>.<ext>     the edit mask, same size: white (>= half scale) = edited
    DIR/target/<stem>.<ext>   the ground truth, same size

``<ext>`` is any of .png, .jpg, .jpeg, .webp, .tif, .tiff, .bmp and may differ between
the three folders; images may be grey, RGB or RGBA (alpha dropped), 8 or 16 bit, and of
any size (each triple is scored at its own size). One triple per file in ``edited/``; a
missing or unreadable mask or target, or a size mismatch, is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pixperfect.imageio import read_image, to_rgb_float

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
LAYOUT = "DIR/edited/<stem>.png, DIR/mask/<stem>.png, DIR/target/<stem>.png"


def _find(folder: Path, stem: str, edited: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{folder / (stem + '.png')} is missing (any of {', '.join(IMAGE_SUFFIXES)} would "
        f"do): every edited image needs a {folder.name} of the same stem, like {edited}; "
        f"expected layout {LAYOUT}"
    )


def _load_rgb(path: Path) -> torch.Tensor:
    image = read_image(path)
    pixels = image.pixels[..., :3] if image.channels == 4 else image.pixels
    return to_rgb_float(pixels)


def load_triples(directory: str | Path) -> list[dict]:
    """Samples ``{name, composite (3, H, W), mask (1, H, W) in {0, 1}, target (3, H, W)}``
    in stem order, from the layout in the module docstring."""
    directory = Path(directory)
    edited_dir = directory / "edited"
    if not edited_dir.is_dir():
        raise FileNotFoundError(
            f"{edited_dir} is not a folder; a triples dataset is laid out as {LAYOUT}"
        )
    edited = sorted(
        p for p in edited_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not edited:
        raise ValueError(f"{edited_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    samples = []
    for path in edited:
        mask_path = _find(directory / "mask", path.stem, path)
        target_path = _find(directory / "target", path.stem, path)
        composite, target = _load_rgb(path), _load_rgb(target_path)
        mask = (_load_rgb(mask_path).mean(0, keepdim=True) >= 0.5).float()
        for other, image in ((mask_path, mask), (target_path, target)):
            if image.shape[-2:] != composite.shape[-2:]:
                raise ValueError(
                    f"{other} is {image.shape[-1]}x{image.shape[-2]} but {path} is "
                    f"{composite.shape[-1]}x{composite.shape[-2]} (width x height); they must match"
                )
        samples.append(
            {"name": f"{path.stem}#0", "composite": composite, "mask": mask, "target": target}
        )
    return samples
