"""Inference: load a trained refiner and apply it to real edits of any size and format."""

from pixperfect.inference.refiner import Refiner, pad_to_multiple, refine_file

__all__ = ["Refiner", "pad_to_multiple", "refine_file"]
