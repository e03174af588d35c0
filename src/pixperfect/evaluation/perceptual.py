"""Perceptual metrics for ``pixperfect evaluate``: LPIPS, FID and U-IDS / P-IDS.

They need pretrained networks, which are only ever loaded from local files: nothing here
downloads, and nothing is ever computed with random weights. When a file is missing,
:func:`load_perceptual` says which one and how to stage it, and the metric's columns are
left out of the results.

- ``lpips``: mean LPIPS distance to the target (whole image, lower is better), from
  :func:`pixperfect.losses.lpips.build_lpips` with the config's ``loss.lpips_net`` and
  ``loss.lpips_weights``.
- ``fid``: Fréchet Inception Distance between each method's outputs and the targets, on
  the 2048-d pool features of the FID Inception network (torch-fidelity's port of the
  TensorFlow graph, as torchmetrics uses it). Lower is better. Needs the ``torch-fidelity``
  package and its weights file ``weights-inception-2015-12-05-6726825d.pth``; with few
  samples (fewer than the 2048 feature dimensions) it is strongly biased upwards: compare
  methods on the same set, never with papers.
- ``u_ids`` / ``p_ids``: the inception discriminative scores of CoModGAN (Zhao et al. 2021),
  x100. A linear SVM (L2-regularised squared hinge, C = 1, as scikit-learn's
  ``LinearSVC(dual=False)``) is fit to separate target features (real) from output
  features (fake); U-IDS is its error rate on those features, P-IDS the share of pairs
  whose output scores more "real" than its own target. Higher is better (50 / 50 would be
  indistinguishable).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pixperfect.losses.lpips import LPIPS, build_lpips, hub_checkpoint_dir, lpips_files

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)
HIGHER_IS_BETTER = {"lpips": False, "fid": False, "u_ids": True, "p_ids": True}

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] -> (B, D)


def inception_candidates(weights: str | Path | None = None) -> list[Path]:
    """Where the FID Inception weights are looked for, in order: ``weights`` (a file, or a
    folder holding :data:`INCEPTION_FILE`), then torch's hub cache (``$TORCH_HOME``), where
    torch-fidelity itself caches the file."""
    paths = []
    if weights is not None:
        weights = Path(weights)
        paths.append(weights / INCEPTION_FILE if weights.is_dir() else weights)
    paths.append(hub_checkpoint_dir() / INCEPTION_FILE)
    return paths


def load_inception(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[FeatureFn | None, str | None]:
    """The FID Inception feature extractor from local files, or (None, what is missing)."""
    candidates = inception_candidates(weights)
    problems = []
    if importlib.util.find_spec("torch_fidelity") is None:
        problems.append(
            "the torch-fidelity package is not installed (`pip install torch-fidelity`)"
        )
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        problems.append(
            f"the FID Inception weights '{INCEPTION_FILE}' are not at any of: "
            f"{', '.join(map(str, candidates))}. On a machine with internet, download "
            f"{INCEPTION_URL} (e.g. `curl -L -O {INCEPTION_URL}`) and copy it to "
            f"{candidates[-1]} (set $TORCH_HOME to move it) or pass --inception-weights FILE"
        )
    if problems:
        return None, "FID, U-IDS and P-IDS are left out: " + "; ".join(problems) + "."

    from torchmetrics.image.fid import NoTrainInceptionV3

    network = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
    ).to(device)
    log.info("FID Inception loaded from %s", path)

    @torch.inference_mode()
    def features(images: torch.Tensor) -> torch.Tensor:
        pixels = images.to(device).clamp(0, 1).mul(255).round().to(torch.uint8)
        return network(pixels).double().cpu()

    return features, None


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, D): |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2)."""
    real, fake = real.double(), fake.double()
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = torch.cov(real.T), torch.cov(fake.T)
    if real.shape[0] < 2:
        cov_r, cov_f = torch.zeros_like(cov_r), torch.zeros_like(cov_f)
    sqrt_trace = torch.linalg.eigvals(cov_r @ cov_f).sqrt().real.sum()
    fid = (mu_r - mu_f).square().sum() + cov_r.trace() + cov_f.trace() - 2 * sqrt_trace
    return max(float(fid), 0.0)  # not below 0 by rounding


def linear_svm(
    x: torch.Tensor, y: torch.Tensor, c: float = 1.0, max_iter: int = 500
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear SVM, primal L2-regularised squared hinge (scikit-learn's ``LinearSVC`` with
    ``dual=False``, its bias regularised like liblinear's): fit to ``x`` (N, D) and labels
    ``y`` in {-1, +1} with L-BFGS in float64; returns the decision function."""
    x = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    y = y.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], lr=1, max_iter=max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * w.square().sum() + c * (1 - y * (x @ w)).clamp_min(0).square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    weights = w.detach()
    return lambda features: (
        torch.cat([features.double(), torch.ones(features.shape[0], 1, dtype=torch.float64)], 1)
        @ weights
    )


def ids_scores(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
    """(U-IDS, P-IDS) x100 for paired feature sets (N, D), real[i] the target of fake[i]."""
    svm = linear_svm(
        torch.cat([real, fake]),
        torch.cat([torch.ones(len(real)), -torch.ones(len(fake))]),
    )
    real_score, fake_score = svm(real), svm(fake)
    errors = (real_score <= 0).sum() + (fake_score > 0).sum()
    u_ids = float(errors) / (len(real) + len(fake))
    p_ids = float((fake_score > real_score).double().mean())
    return 100 * u_ids, 100 * p_ids


@dataclass
class Perceptual:
    """Loaded perceptual networks (either may be None) and why any are missing."""

    lpips: LPIPS | None = None
    features: FeatureFn | None = None
    missing: dict[str, str] = field(default_factory=dict)  # metric names -> message

    @property
    def names(self) -> list[str]:
        names = ["lpips"] if self.lpips is not None else []
        return names + (["fid", "u_ids", "p_ids"] if self.features is not None else [])


def load_perceptual(
    lpips_net: str = "alex",
    lpips_weights: str | Path | None = None,
    inception_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Perceptual:
    """LPIPS and the FID Inception network, each from local files or left out with a
    message (in ``missing``) naming the file and how to stage it."""
    result = Perceptual()
    problem = lpips_files(lpips_net, lpips_weights).missing_message()
    if problem is None:
        result.lpips = build_lpips(lpips_net, lpips_weights, on_missing="error").to(device)
    else:
        result.missing["lpips"] = problem + " The lpips column is left out."
    result.features, problem = load_inception(inception_weights, device)
    if problem is not None:
        result.missing["fid, u_ids, p_ids"] = problem
    return result


class PerceptualScores:
    """Accumulates LPIPS per image and Inception features per method; ``compute`` gives
    ``{method: {lpips, fid, u_ids, p_ids}}`` for whichever networks are loaded."""

    def __init__(self, perceptual: Perceptual, device: str | torch.device = "cpu") -> None:
        self.perceptual = perceptual
        self.device = device
        self.lpips: dict[str, list[float]] = {}
        self.features: dict[str, list[torch.Tensor]] = {}

    @torch.inference_mode()
    def update(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> None:
        """``outputs``: method -> (1, 3, H, W) image; ``target`` the ground truth."""
        lpips, features = self.perceptual.lpips, self.perceptual.features
        if lpips is not None:
            target_d = target.to(self.device)
            for name, image in outputs.items():
                value = lpips(image.to(self.device).clamp(0, 1), target_d)
                self.lpips.setdefault(name, []).append(float(value.mean()))
        if features is not None:
            names = ["target", *outputs]
            batch = torch.cat([target, *outputs.values()]).float()
            for name, f in zip(names, features(batch), strict=True):
                self.features.setdefault(name, []).append(f)

    def compute(self) -> dict[str, dict[str, float]]:
        scores: dict[str, dict[str, float]] = {}
        for name, values in self.lpips.items():
            scores.setdefault(name, {})["lpips"] = sum(values) / len(values)
        if self.features:
            real = torch.stack(self.features["target"])
            for name, feats in self.features.items():
                if name == "target":
                    continue
                fake = torch.stack(feats)
                u_ids, p_ids = ids_scores(real, fake)
                scores.setdefault(name, {}).update(
                    fid=frechet_distance(real, fake), u_ids=u_ids, p_ids=p_ids
                )
        return scores
