"""Evaluation: held-out artifact triples, methods side by side, tables and JSON."""

from pixperfect.evaluation.evaluate import evaluate, format_table

__all__ = ["evaluate", "format_table"]
