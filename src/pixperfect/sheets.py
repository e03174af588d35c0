"""Contact sheets: simulated samples side by side with the parameters that made them.

clean | composite | mask | |composite - clean| x gain      (caption: families and values)
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from data_sim.simulator import ArtifactSimulator, describe


def _tile(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().clamp(0, 1).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def contact_sheet(
    batch: dict[str, torch.Tensor],
    captions: list[str],
    path: str | Path,
    per_row: int = 2,
    error_gain: float = 4.0,
) -> Path:
    """Write a PNG contact sheet of a simulated batch; returns its path."""
    clean, composite, mask = batch["target"], batch["composite"], batch["mask"]
    n, _, h, w = clean.shape
    font = ImageFont.load_default()
    line_h, pad = 12, 4
    chars = max(20, (4 * w) // 6)
    wrapped = [textwrap.wrap(c, chars) or [""] for c in captions]
    cap_h = line_h * max(len(lines) for lines in wrapped) + pad
    cell_w, cell_h = 4 * w + 5 * pad, h + cap_h + 2 * pad
    rows = (n + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        x0, y0 = (i % per_row) * cell_w, (i // per_row) * cell_h
        diff = (composite[i] - clean[i]).abs() * error_gain
        for j, tile in enumerate((clean[i], composite[i], mask[i], diff)):
            sheet.paste(Image.fromarray(_tile(tile)), (x0 + pad + j * (w + pad), y0 + pad))
        for k, line in enumerate(wrapped[i]):
            draw.text((x0 + pad, y0 + h + 2 * pad + k * line_h), line, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def simulate_sheet(
    simulator: ArtifactSimulator,
    photos: list[torch.Tensor],
    path: str | Path,
    n: int = 16,
    size: int = 256,
    seed: int = 0,
) -> tuple[Path, list[str]]:
    """Simulate ``n`` random ``size`` crops of ``photos`` and write their contact sheet;
    returns the sheet's path and one caption per sample."""
    from pixperfect.data.crops import random_crop

    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(photos), (n,), generator=generator).tolist()
    clean = torch.stack([random_crop(photos[i], size, generator) for i in picks])
    batch, params = simulator(clean, generator)
    captions = [f"{i}: {describe(params, i)}" for i in range(n)]
    return contact_sheet(batch, captions, path), captions
