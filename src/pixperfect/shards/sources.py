"""Where shard builds find their photos: a folder, a list file, or scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

from pixperfect.data.photos import SKIMAGE_PHOTOS, list_images
from pixperfect.errors import InputError, MissingFileError


def resolve_sources(images: str, holdout: list[str] | None = None) -> list[str]:
    """Source strings for :class:`BuildSpec`: ``skimage`` (the bundled photos not in
    ``holdout``), a folder (every image under it, sorted), or a ``.txt`` file listing one
    image path per line (relative paths are relative to the list file)."""
    if images == "skimage":
        return [f"skimage:{n}" for n in SKIMAGE_PHOTOS if n not in (holdout or [])]
    path = Path(images)
    if path.is_dir():
        return [str(p.resolve()) for p in list_images(path)]
    if path.is_file() and path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        if not entries:
            raise InputError(f"image list {path} is empty")
        return [str((path.parent / e).resolve()) for e in entries]
    raise MissingFileError(
        f"--images {images}: expected a photo folder, a .txt list of image paths, or 'skimage'"
    )
