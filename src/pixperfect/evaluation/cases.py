"""A side-by-side PNG sheet of the worst and best evaluation cases.

One row per case: composite | each method | target | mask, each tile cropped around the
edit (the mask's bounding box plus a margin) so the seam is visible at thumbnail size.
Cases are ranked by a per-sample score, in ``evaluate`` the refiner's band-PSNR gain over
identity (dB).
"""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def edit_box(mask: torch.Tensor, margin: float = 0.5, min_size: int = 32) -> tuple[int, ...]:
    """(top, left, bottom, right) of a square-ish crop around the mask (1, H, W): its
    bounding box grown by ``margin`` of its size each way, at least ``min_size`` px."""
    h, w = mask.shape[-2:]
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    if len(ys) == 0:
        return 0, 0, h, w
    side = max(int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    side = min(max(int(side * (1 + 2 * margin)), min_size), h, w)
    cy, cx = int(ys.min() + ys.max()) // 2, int(xs.min() + xs.max()) // 2
    top = min(max(cy - side // 2, 0), h - side)
    left = min(max(cx - side // 2, 0), w - side)
    return top, left, top + side, left + side


def make_tiles(images: dict[str, torch.Tensor], mask: torch.Tensor, size: int) -> list[np.ndarray]:
    """(size, size, 3) uint8 tiles of (C, H, W) images in [0, 1], cropped around the edit."""
    top, left, bottom, right = edit_box(mask)
    tiles = []
    for image in images.values():
        crop = image[:, top:bottom, left:right].float().clamp(0, 1)
        crop = crop.expand(3, -1, -1) if crop.shape[0] == 1 else crop
        crop = F.interpolate(
            crop[None], size=(size, size), mode="area" if crop.shape[-1] >= size else "nearest"
        )[0]
        tiles.append(crop.mul(255).round().byte().permute(1, 2, 0).numpy())
    return tiles


class CaseTracker:
    """Keeps the ``k`` lowest- and ``k`` highest-scoring cases (tiles and caption)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._best: list[tuple[float, int, str, list[np.ndarray]]] = []  # min-heap
        self._worst: list[tuple[float, int, str, list[np.ndarray]]] = []  # max-heap (negated)
        self._count = 0

    def wants(self, score: float) -> bool:
        """Whether a case with ``score`` would enter either list (so tiles are worth making)."""
        if self.k <= 0:
            return False
        return (
            len(self._best) < self.k
            or score > self._best[0][0]
            or len(self._worst) < self.k
            or -score > self._worst[0][0]
        )

    def add(self, score: float, name: str, tiles: list[np.ndarray]) -> None:
        self._count += 1
        for heap, key in ((self._best, score), (self._worst, -score)):
            item = (key, self._count, name, tiles)
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            elif key > heap[0][0]:
                heapq.heapreplace(heap, item)

    def sections(self) -> list[tuple[str, list[tuple[float, str, list[np.ndarray]]]]]:
        """[("worst", rows), ("best", rows)], each row (score, name, tiles), worst first and
        best first; a case never appears in both (few cases are split in half)."""
        items = {i: (s, n, t) for s, i, n, t in self._best}
        items.update({i: (-s, n, t) for s, i, n, t in self._worst})
        ranked = sorted(items.values(), key=lambda row: row[0])  # ascending score
        if len(ranked) <= 2 * self.k:
            half = (len(ranked) + 1) // 2
            worst, best = ranked[:half], ranked[half:]
        else:
            worst, best = ranked[: self.k], ranked[-self.k :]
        return [("worst", worst), ("best", best[::-1])]


def write_case_sheet(
    tracker: CaseTracker, columns: list[str], path: str | Path, score_label: str
) -> Path | None:
    """Write the sheet: a header of column names, then the worst and the best cases."""
    sections = tracker.sections()
    if not any(rows for _, rows in sections):
        return None
    size = next(rows[0][2][0].shape[0] for _, rows in sections if rows)
    font = ImageFont.load_default()
    pad, label_w, text_h = 4, 150, 14
    width = label_w + len(columns) * (size + pad) + pad
    n_rows = sum(len(rows) for _, rows in sections)
    height = text_h + pad + len(sections) * (text_h + pad) + n_rows * (size + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((label_w + j * (size + pad) + pad, pad), name, fill="black", font=font)
    y = text_h + pad
    for title, rows in sections:
        draw.text((pad, y + 2), f"{title} {len(rows)} by {score_label}", fill="black", font=font)
        y += text_h + pad
        for score, name, tiles in rows:
            draw.text((pad, y + pad), name[:24], fill="black", font=font)
            draw.text((pad, y + pad + text_h), f"{score:+.2f}", fill="black", font=font)
            for j, tile in enumerate(tiles):
                sheet.paste(Image.fromarray(tile), (label_w + j * (size + pad) + pad, y))
            y += size + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
