"""Inference: load a trained refiner and apply it to real edits of any size and format.

- :mod:`~pixperfect.inference.refiner`: ``Refiner`` (crop, tiles, pooling, paste-back);
- :mod:`~pixperfect.inference.crop`: mask binarisation, the crop box, paste-back weights;
- :mod:`~pixperfect.inference.tiling`: blended overlapping tiles (stride padding:
  :mod:`imageops.padding`);
- :mod:`~pixperfect.inference.pooling`: optional test-time pooling over colour jitters;
- :mod:`~pixperfect.inference.export`: the export folder and its loader (``pixperfect export``
  writes it: :mod:`pixperfect.release`);
- :mod:`~pixperfect.inference.files`: refining files and folders (``pixperfect refine``).
"""

from imageops.padding import pad_to_multiple
from pixperfect.inference.crop import MASK_THRESHOLD, binarize_mask
from pixperfect.inference.files import FolderReport, read_mask, refine_file, refine_folder
from pixperfect.inference.refiner import Refiner

__all__ = [
    "MASK_THRESHOLD",
    "FolderReport",
    "Refiner",
    "binarize_mask",
    "pad_to_multiple",
    "read_mask",
    "refine_file",
    "refine_folder",
]
