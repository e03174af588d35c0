"""Evaluation: edit triples (a folder, or simulated from held-out photos), the refiner side
by side with classical baselines, seam and perceptual metrics, tables, JSON and a sheet."""

from pixperfect.evaluation.baselines import (
    BASELINES,
    laplacian_blend,
    poisson_blend,
    reinhard_transfer,
)
from pixperfect.evaluation.dataset import load_triples
from pixperfect.evaluation.evaluate import evaluate
from pixperfect.evaluation.report import (
    format_csv,
    format_markdown,
    format_table,
    write_results,
)

__all__ = [
    "BASELINES",
    "evaluate",
    "format_csv",
    "format_markdown",
    "format_table",
    "laplacian_blend",
    "load_triples",
    "poisson_blend",
    "reinhard_transfer",
    "write_results",
]
