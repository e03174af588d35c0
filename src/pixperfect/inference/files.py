"""Refining image files: one (image, mask) pair, or a folder of them.

Folder convention: every visible file in the image folder is an edited image; its mask is
the file in the mask folder named ``<stem>.<ext>`` or, failing that, ``<stem>_mask.<ext>``
(any image extension for either). When the two folders are the same, files whose stem ends
in ``_mask`` are masks, not images. Each output is written to the output folder under the
image's own file name (same format), or as ``<stem>.png`` with ``png=True`` (JPEG outputs
re-encode the whole image: :mod:`pixperfect.imageio`). Masks are binarised at
:data:`~pixperfect.inference.crop.MASK_THRESHOLD` of full scale (white = edited).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import torch

from pixperfect.errors import InputError, MissingFileError
from pixperfect.imageio import Image, is_lossy, read_image, write_image
from pixperfect.inference.crop import binarize_mask
from pixperfect.inference.refiner import Refiner

MASK_SUFFIX = "_mask"
LOSSY_NOTE = (
    "JPEG re-encodes the whole image when saved, so pixels outside the edit change by a few "
    "levels (written at quality 100, no chroma subsampling)"
)


def read_mask(path: str | Path, like: Image, image_path: str | Path) -> torch.Tensor:
    """Binary (1, H, W) float mask from any image file; refuses a size that differs from
    the image's, naming both."""
    mask = read_image(path)
    if mask.size != like.size:
        raise InputError(
            f"mask {path} is {mask.size[0]}x{mask.size[1]} but image {image_path} is "
            f"{like.size[0]}x{like.size[1]} (width x height); resize the mask with nearest "
            "neighbour interpolation to the image size"
        )
    return torch.from_numpy(binarize_mask(mask.pixels)).float()[None]


def refine_file(
    refiner: Refiner, image_path: str | Path, mask_path: str | Path, out_path: str | Path
) -> Path:
    """Refine one image file with its mask file; the output keeps size, mode and bit depth.
    Only the crop around the mask is ever converted to float."""
    image = read_image(image_path)
    mask = read_mask(mask_path, image, image_path)
    write_image(out_path, refiner(image, mask[0].bool()))
    return Path(out_path)


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def find_mask(image: Path, masks: list[Path]) -> Path:
    """The mask of ``image`` among ``masks`` by the folder convention (module docstring)."""
    for stem in (image.stem, image.stem + MASK_SUFFIX):
        found = [m for m in masks if m.stem == stem and m != image]
        if len(found) > 1:
            raise InputError(f"several masks for it: {', '.join(m.name for m in found)}")
        if found:
            return found[0]
    raise MissingFileError(
        f"no mask for it: expected {image.stem}.<ext> or {image.stem}{MASK_SUFFIX}.<ext> in "
        f"the mask folder"
    )


@dataclass
class FolderReport:
    """What a folder run did: the outputs written and, per failed image, why."""

    refined: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def lossy(self) -> int:
        """How many outputs are JPEG (every pixel re-encoded)."""
        return sum(is_lossy(p) for p in self.refined)

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        """``refined R of N image(s), skipped S`` and, per skipped file, why."""
        total = len(self.refined) + len(self.failed)
        lines = [f"refined {len(self.refined)} of {total} image(s), skipped {len(self.failed)}"]
        if self.failed:
            lines[0] += " that failed:"
            lines += [f"  {name}: {why}" for name, why in self.failed.items()]
        if self.lossy:
            lines.append(
                f"note: {self.lossy} output(s) are JPEG: {LOSSY_NOTE}; --png writes lossless "
                "PNG files instead"
            )
        return "\n".join(lines)


def check_folders(images: str | Path, masks: str | Path, out: str | Path) -> None:
    """Refuse a folder run's arguments before any work: both inputs must be folders and the
    output must not be the image folder (FileNotFoundError, ValueError)."""
    images, masks, out = Path(images), Path(masks), Path(out)
    for name, folder in (("--images", images), ("--masks", masks)):
        if not folder.is_dir():
            raise MissingFileError(f"{name} {folder} is not a folder")
    if out.resolve() == images.resolve():
        raise InputError(f"--out {out} is the image folder; refusing to overwrite the inputs")


def refine_folder(
    refiner: Refiner,
    images: str | Path,
    masks: str | Path,
    out: str | Path,
    progress: bool = True,
    png: bool = False,
) -> FolderReport:
    """Refine every image of the folder ``images`` with its mask from ``masks`` into ``out``.
    A file that fails (unreadable, not an image, no mask, size mismatch) is recorded in
    the report, skipped, and the run goes on. ``progress``: a bar on stderr with the
    refined and skipped counts (refreshed every 10 s when stderr is not a terminal).
    ``png``: every output is ``<stem>.png`` (lossless) instead of the input's name."""
    from tqdm import tqdm

    check_folders(images, masks, out)
    images, masks, out = Path(images), Path(masks), Path(out)
    mask_files = _visible_files(masks)
    candidates = _visible_files(images)
    if masks.resolve() == images.resolve():
        candidates = [p for p in candidates if not p.stem.endswith(MASK_SUFFIX)]
    report = FolderReport()
    written: dict[str, str] = {}  # output name -> the image it came from
    bar = tqdm(
        candidates,
        desc="refine",
        unit="image",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 10,
        dynamic_ncols=True,
    )
    for image in bar:
        try:
            if not cv2.haveImageReader(str(image)):  # reads the header only
                raise InputError("not a readable image (PNG, JPEG, WebP, TIFF, BMP)")
            mask = find_mask(image, mask_files)
            name = image.stem + ".png" if png else image.name
            if name in written:  # with png: photo.jpg and photo.png
                raise InputError(f"its output {name} is {written[name]}'s too; rename one")
            written[name] = image.name
            report.refined.append(refine_file(refiner, image, mask, out / name))
        except Exception as e:  # one bad file must not stop the folder
            report.failed[image.name] = str(e) or type(e).__name__
        bar.set_postfix(refined=len(report.refined), skipped=len(report.failed), refresh=False)
    return report
