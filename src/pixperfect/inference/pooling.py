"""Test-time pooling: refine N colour-jittered copies of the crop and pool the results.

``pooling=1`` is off (one plain pass). Copy 0 is always the unjittered input; copies
1..N-1 get small, seeded brightness (+-0.03), contrast and saturation (x0.95..1.05) jitters
(``kornia.enhance``), so a run is deterministic. Two ways to pool:

- ``"mean"`` (default): the jitter is applied to the whole crop, and the refiner's
  *correction* (output minus its own input) is averaged over the copies and added to the
  unjittered input. We average corrections instead of inverting the jitter: clipping to
  [0, 1] in contrast and saturation makes the jitter not exactly invertible, while the
  correction of a seam barely depends on a small global colour change. This is a plain
  test-time-augmentation average: it reduces the variance of the correction.
- ``"select"`` (the paper's, docs/method.md §2): the jitter is applied inside the mask
  only, and the output that changed its own input least (weighted by the paste-back
  weights, i.e. inside the mask and its band) is kept as is.
"""

from __future__ import annotations

from collections.abc import Callable

import kornia.enhance as KE
import torch

POOLING_MODES = ("mean", "select")
BRIGHTNESS, CONTRAST, SATURATION = 0.03, 0.05, 0.05


def jitter_params(n: int, seed: int) -> list[tuple[float, float, float]]:
    """(brightness shift, contrast factor, saturation factor) for copies 0..n-1; copy 0 is
    the identity."""
    g = torch.Generator().manual_seed(seed)
    params = [(0.0, 1.0, 1.0)]
    for _ in range(n - 1):
        u = torch.rand(3, generator=g) * 2 - 1
        params.append(
            (
                float(u[0]) * BRIGHTNESS,
                1 + float(u[1]) * CONTRAST,
                1 + float(u[2]) * SATURATION,
            )
        )
    return params


def colour_jitter(image: torch.Tensor, params: tuple[float, float, float]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] with the brightness, contrast, saturation jitter applied."""
    brightness, contrast, saturation = params
    if (brightness, contrast, saturation) == (0.0, 1.0, 1.0):
        return image  # copy 0: bit-exact (the HSV round trip of a saturation of 1 is not)
    x = KE.adjust_brightness(image, brightness)
    x = KE.adjust_contrast(x, contrast)
    return KE.adjust_saturation(x, saturation).clamp(0, 1)


def pool_refinements(
    refine: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    n: int,
    mode: str = "mean",
    seed: int = 0,
) -> torch.Tensor:
    """Pool ``refine`` over ``n`` jittered copies of (1, 3, H, W) ``image``; ``mask`` and
    ``weights`` are (1, 1, H, W) (the edit and the paste-back weights, for ``select``)."""
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode {mode!r} is not one of {', '.join(POOLING_MODES)}")
    if n <= 1:
        return refine(image)
    best, best_score, correction = None, float("inf"), torch.zeros_like(image)
    for params in jitter_params(n, seed):
        jittered = colour_jitter(image, params)
        if mode == "select":
            jittered = torch.lerp(image, jittered, mask)
        refined = refine(jittered)
        if mode == "mean":
            correction += refined - jittered
            continue
        score = float(((refined - jittered).abs() * weights).sum())
        if score < best_score:
            best, best_score = refined, score
    return (image + correction / n).clamp(0, 1) if mode == "mean" else best
