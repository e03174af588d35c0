"""Discriminative tone mapping (docs/method.md §3): the per-sample tone curve that blows the
refiner's current errors up about beta times before the pixel-space losses see them.

Why: plain RGB losses barely register a 2 % colour or tone shift, so a refiner trained on them
alone barely removes it. Per sample we draw beta ~ U[beta_min, beta_max], form the amplified
target ``y_amp = x_gt + beta * (x_pred - x_gt)`` and fit, per colour channel, the degree-D
polynomial ``f`` that best maps x_pred's values onto y_amp's values. Where x_pred is right, f
stays near the identity; where a range of tones is wrong (and the same tones are right
elsewhere, e.g. in the background), f gets a slope of about beta there, so
``f(x_pred) - f(x_gt)`` is the error amplified. Both images go through the same f, whose
coefficients are detached, and the usual L1 / LPIPS / adversarial losses compare the pair.

Parametrisation: ``f(v) = v + g(2v - 1)`` with ``g`` a polynomial of degree D in
``t = 2v - 1``. Fitting the correction ``g`` (target ``(beta - 1) * (x_pred - x_gt)``) makes
the ridge pull towards the identity rather than towards zero, so a flat image or an empty
region gives f ~ identity instead of a collapsed curve; centring on [-1, 1] keeps the
Vandermonde matrix well conditioned.

Randomness (betas, then the sampled pixels) comes only from the ``torch.Generator`` passed in,
so a step is reproducible from its seed whatever device the images live on. Under DDP, pass
``rank`` and ``world``: each draw is made for the global batch and the rank keeps its rows
(:mod:`pixperfect.losses.randomness`), so a sample's curve does not depend on the split. These
draws are small (the fitting uniforms, 2 x ``samples_per_region`` float64 per sample, are 64 KB
a sample at the default 4096), so they are drawn at the global shape and sliced.
"""

from __future__ import annotations

import torch
from torch import nn

from pixperfect.losses.randomness import rank_rows

DEFAULT_BETA_RANGE = (20.0, 40.0)
DEFAULT_DEGREE = 5  # the paper says 5 in one place and 6 in another (docs/method.md §3)
DEFAULT_SAMPLES = 4096  # fitting pixels per region (inside and outside the mask) per sample
# Relative to a Gram matrix normalised by the number of samples (entries <= 1). Large enough
# to make flat images and one-tone regions solvable in float64, small enough not to bias the
# fit: a steep curve needs large coefficients, and a ridge of 1e-5 already halves the
# amplification of a 0.01 shift (beta 30 -> ~12); 1e-8 keeps it within 0.2 %.
DEFAULT_RIDGE = 1e-8
# The mapped images are clamped to the valid image range: f is a free polynomial and
# extrapolates wildly for tones it was not fitted on; [0, 1] also keeps LPIPS and the
# discriminator on the input range they expect.
DEFAULT_CLAMP = (0.0, 1.0)


def sample_betas(
    batch: int,
    generator: torch.Generator,
    beta_range: tuple[float, float] = DEFAULT_BETA_RANGE,
    *,
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """(B,) amplification factors drawn uniformly from ``beta_range``, on the generator's device:
    ``rank``'s rows of a draw for the global batch of ``world * batch``."""
    lo, hi = beta_range
    rows = rank_rows(batch, rank, world)
    u = torch.rand(
        world * batch, generator=generator, device=generator.device, dtype=torch.float64
    )[rows]
    return lo + (hi - lo) * u


def _fit_dtype(device: torch.device) -> torch.dtype:
    # The normal equations of a degree-5 Vandermonde matrix want float64; MPS has none.
    return torch.float32 if device.type == "mps" else torch.float64


def _sample_region(region: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel indices drawn uniformly (with replacement) from each sample's region.

    region: (B, P) bool; u: (B, N) uniform in [0, 1). Returns (B, N) indices into P and a (B,)
    flag that is False where the region is empty (its indices are then meaningless). Batched
    and on the images' device: rank k of the region is found by binary search in its cumsum.
    """
    cum = region.cumsum(dim=1, dtype=torch.int32)  # (B, P): region pixels up to and incl. p
    count = cum[:, -1:]  # (B, 1)
    rank = (u * count).long()  # in [0, count); count == 0 gives rank 0
    rank = torch.minimum(rank, (count - 1).clamp_min(0))
    index = torch.searchsorted(cum, (rank + 1).to(cum.dtype))  # first p with cum[p] >= rank+1
    return index.clamp_max(region.shape[1] - 1), count.squeeze(1) > 0


@torch.no_grad()
def fit_tone_curves(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    beta: torch.Tensor,
    generator: torch.Generator,
    *,
    degree: int = DEFAULT_DEGREE,
    samples_per_region: int = DEFAULT_SAMPLES,
    ridge: float = DEFAULT_RIDGE,
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """Detached coefficients (B, C, degree + 1) of ``g`` in ``f(v) = v + sum_d q_d (2v - 1)^d``.

    pred, gt: (B, C, H, W); mask: (B, 1, H, W), edit region where > 0.5; beta: (B,).
    ``samples_per_region`` pixels are drawn inside and as many outside the mask (the same pixel
    positions for every channel) so a small edit is not drowned by its background; an empty
    region (mask all zeros or all ones) simply contributes nothing. All samples of a batch are
    solved at once from ridge-regularised normal equations. The fitting pixels are ``rank``'s
    rows of a draw for the global batch of ``world * B``.
    """
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(f"mask must be (B, 1, H, W) matching pred; got {tuple(mask.shape)}")
    batch, channels = pred.shape[:2]
    dtype = _fit_dtype(pred.device)
    rows = rank_rows(batch, rank, world)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        u = torch.rand(
            (world * batch, 2, samples_per_region),
            generator=generator,
            device=generator.device,
            dtype=torch.float64,
        )[rows].to(pred.device)
        inside = (mask > 0.5).flatten(1)
        idx_in, has_in = _sample_region(inside, u[:, 0])
        idx_out, has_out = _sample_region(~inside, u[:, 1])
        index = torch.cat([idx_in, idx_out], dim=1)  # (B, 2N)
        weight = torch.cat(
            [
                has_in[:, None].expand(-1, samples_per_region),
                has_out[:, None].expand(-1, samples_per_region),
            ],
            dim=1,
        ).to(dtype)  # (B, 2N): 0 for the draws of an empty region

        gather_index = index[:, None].expand(-1, channels, -1)
        xp = pred.detach().flatten(2).gather(2, gather_index).to(dtype)  # (B, C, 2N)
        xg = gt.detach().flatten(2).gather(2, gather_index).to(dtype)
        # y_amp - x_pred: what g has to add to x_pred to reach the amplified target.
        residual = (beta.to(pred.device, dtype)[:, None, None] - 1) * (xp - xg)

        powers = torch.arange(degree + 1, device=pred.device, dtype=dtype)
        vander = (2 * xp - 1)[..., None] ** powers  # (B, C, 2N, D+1)
        weighted = vander * weight[:, None, :, None]
        n = weight.sum(dim=1).clamp_min(1)[:, None, None, None]  # (B, 1, 1, 1)
        gram = weighted.transpose(-1, -2) @ vander / n
        gram = gram + ridge * torch.eye(degree + 1, device=pred.device, dtype=dtype)
        rhs = weighted.transpose(-1, -2) @ residual[..., None] / n
        # solve_ex: the ridge keeps the system SPD, and skipping the error check avoids a sync.
        return torch.linalg.solve_ex(gram, rhs).result.squeeze(-1)


def apply_tone_curves(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``f(x)`` per sample and channel in float32; differentiable in x, not in coeffs."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        q = coeffs.detach().to(x.device, torch.float32)[..., None, None]  # (B, C, D+1, 1, 1)
        t = 2 * x - 1
        correction = q[:, :, -1]
        for d in range(q.shape[2] - 2, -1, -1):  # Horner: D multiply-adds per pixel
            correction = correction * t + q[:, :, d]
        return x + correction


def discriminative_tone_map(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    *,
    beta_range: tuple[float, float] = DEFAULT_BETA_RANGE,
    degree: int = DEFAULT_DEGREE,
    samples_per_region: int = DEFAULT_SAMPLES,
    ridge: float = DEFAULT_RIDGE,
    clamp: tuple[float, float] = DEFAULT_CLAMP,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(pred), f(gt)) in float32, clamped to ``clamp``: images in the discriminative space.

    Draws B betas, then the fitting pixels, from ``generator`` (any device; a CPU generator
    makes the draws identical on every device). Gradients reach ``pred`` through f(pred) only;
    the curve itself is a constant of the step. Under DDP, ``rank`` and ``world`` make every
    draw one for the global batch, of which this rank keeps its rows.
    """
    beta = sample_betas(pred.shape[0], generator, beta_range, rank=rank, world=world)
    coeffs = fit_tone_curves(
        pred,
        gt,
        mask,
        beta,
        generator,
        degree=degree,
        samples_per_region=samples_per_region,
        ridge=ridge,
        rank=rank,
        world=world,
    )
    lo, hi = clamp
    return (
        apply_tone_curves(pred, coeffs).clamp(lo, hi),
        apply_tone_curves(gt, coeffs).clamp(lo, hi),
    )


class DiscriminativeToneMap(nn.Module):
    """:func:`discriminative_tone_map` with its settings fixed at construction; no parameters."""

    def __init__(
        self,
        beta_range: tuple[float, float] = DEFAULT_BETA_RANGE,
        degree: int = DEFAULT_DEGREE,
        samples_per_region: int = DEFAULT_SAMPLES,
        ridge: float = DEFAULT_RIDGE,
        clamp: tuple[float, float] = DEFAULT_CLAMP,
    ) -> None:
        super().__init__()
        if not 0 < beta_range[0] <= beta_range[1]:
            raise ValueError(f"beta_range={beta_range} must satisfy 0 < min <= max")
        if degree < 1 or samples_per_region < 1 or ridge <= 0 or clamp[0] >= clamp[1]:
            raise ValueError("need degree >= 1, samples_per_region >= 1, ridge > 0, clamp lo < hi")
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.degree = degree
        self.samples_per_region = samples_per_region
        self.ridge = ridge
        self.clamp = (float(clamp[0]), float(clamp[1]))

    def forward(
        self,
        pred: torch.Tensor,
        gt: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return discriminative_tone_map(
            pred,
            gt,
            mask,
            generator,
            beta_range=self.beta_range,
            degree=self.degree,
            samples_per_region=self.samples_per_region,
            ridge=self.ridge,
            clamp=self.clamp,
            rank=rank,
            world=world,
        )

    def extra_repr(self) -> str:
        return (
            f"beta_range={self.beta_range}, degree={self.degree}, "
            f"samples_per_region={self.samples_per_region}, ridge={self.ridge}, clamp={self.clamp}"
        )
