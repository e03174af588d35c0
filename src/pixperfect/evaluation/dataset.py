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

from pixperfect.data.photos import IMAGE_SUFFIXES
from pixperfect.errors import InputError, MissingFileError
from pixperfect.imageio import Image, read_image, to_rgb_float
from pixperfect.inference.files import read_mask

LAYOUT = "DIR/edited/<stem>.png, DIR/mask/<stem>.png, DIR/target/<stem>.png"


def _find(folder: Path, stem: str, edited: Path) -> Path:
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise MissingFileError(
        f"{folder / (stem + '.png')} is missing (any of {', '.join(sorted(IMAGE_SUFFIXES))} would "
        f"do): every edited image needs a {folder.name} of the same stem, like {edited}; "
        f"expected layout {LAYOUT}"
    )


def _rgb(image: Image) -> torch.Tensor:
    return to_rgb_float(image.pixels[..., :3] if image.channels == 4 else image.pixels)


def load_triples(directory: str | Path) -> list[dict]:
    """Samples ``{name, composite (3, H, W), mask (1, H, W) in {0, 1}, target (3, H, W)}``
    in stem order, from the layout in the module docstring."""
    directory = Path(directory)
    edited_dir = directory / "edited"
    if not edited_dir.is_dir():
        raise MissingFileError(
            f"{edited_dir} is not a folder; a triples dataset is laid out as {LAYOUT}"
        )
    edited = sorted(
        p for p in edited_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not edited:
        raise InputError(f"{edited_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    samples = []
    for path in edited:
        mask_path = _find(directory / "mask", path.stem, path)
        target_path = _find(directory / "target", path.stem, path)
        edited_image, target_image = read_image(path), read_image(target_path)
        mask = read_mask(mask_path, edited_image, path)  # binarised; refuses another size
        if target_image.size != edited_image.size:
            raise InputError(
                f"{target_path} is {target_image.size[0]}x{target_image.size[1]} but {path} "
                f"is {edited_image.size[0]}x{edited_image.size[1]} (width x height); they "
                "must match"
            )
        composite, target = _rgb(edited_image), _rgb(target_image)
        samples.append(
            {"name": f"{path.stem}#0", "composite": composite, "mask": mask, "target": target}
        )
    return samples
