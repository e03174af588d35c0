"""Image grids for TensorBoard and contact sheets: input | refined | target | mask | |error|x4."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid


def comparison_grid(
    composite: torch.Tensor,
    refined: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    max_rows: int = 4,
    error_gain: float = 4.0,
) -> torch.Tensor:
    """(3, H', W') grid; one row per sample, columns as named in the module docstring."""
    n = min(max_rows, composite.shape[0])
    columns = [
        composite[:n],
        refined[:n],
        target[:n],
        mask[:n].expand(-1, 3, -1, -1),
        ((refined[:n] - target[:n]).abs() * error_gain),
    ]
    tiles = torch.stack([c.detach().float().clamp(0, 1).cpu() for c in columns], dim=1)
    return make_grid(tiles.flatten(0, 1), nrow=len(columns), padding=2, pad_value=1.0)


def should_log_images(step: int, every: int) -> bool:
    """Often at first (training changes fast), then every ``every`` steps."""
    return step in (1, 10, 50, 100) or (every > 0 and step % every == 0)


def grid_indices(families: list[str], count: int = 8) -> list[int]:
    """Which samples of a fixed validation set its image grid shows, the same at every
    validation: the first sample of each artifact-family combination (in name order), then
    evenly spaced others, ``count`` at most, in index order."""
    first: dict[str, int] = {}
    for index, name in enumerate(families):
        first.setdefault(name, index)
    chosen = [first[name] for name in sorted(first)][:count]
    if len(chosen) < count and families:
        spread = torch.linspace(0, len(families) - 1, count).round().long().tolist()
        chosen += [i for i in dict.fromkeys(spread) if i not in chosen][: count - len(chosen)]
    return sorted(chosen)
