"""Training diagnostics: the measurements that say why a refiner learns, or learns nothing, on
top of its colour prior. :class:`Diagnostics` owns them for :class:`RefinerModule`
(``self.diagnostics``); everything is measured on the steps whose scalars are logged
(``trainer.log_every_n_steps``) or at validation, so the other steps cost nothing extra.

- ``diag/gate_open_<region>``: the prior gate's mean opening ``sigmoid(logit)``, the share
  of the way from the composite to the prior, read from the logits of ``generator.gate.conv``
  (no gate, no tag);
- ``diag/correction_mean_<region>``, ``diag/correction_max_<region>``: mean and max
  |correction| in 8-bit levels (x 255) over pixels and channels, the correction being the
  output of ``generator.head`` as it reaches the image (times the edit-margin mask when
  ``edit_margin`` >= 0, as :func:`~pixperfect.models.residual.apply_correction` applies it);
- ``diag/grad_body_via_head``, ``diag/grad_body_via_gate``: the L2 norm of the loss's
  gradient with respect to the features the head and the gate read (the decoder's output),
  through the head alone and through the gate alone: which of the two drives the body;
- ``grad/<level>``: mean |gradient| per parameter element of each level of the generator
  (its top-level children, a ``ModuleList`` split per entry: ``stem``, ``down.0``, ...,
  ``fuse.0``, ..., ``head``, ``gate``), after clipping, as Adam receives it, to compare with
  Adam's ``eps``; ``grad/head_over_deepest`` (the head's over the smallest level's) and
  ``grad/levels_below_adam_eps`` (how many levels are under ``eps``);
- ``train_family/<family>/band_psnr_gain``: refined minus composite band PSNR, per sample,
  averaged over the step's samples with that artifact family (from the first step that has
  one; NaN on a later step that has none);
- ``val_family/<family>/band_psnr``, ``.../identity_band_psnr``, ``.../band_psnr_gain``,
  ``.../harm_rate`` and, with a colour prior, ``.../prior_band_psnr`` and
  ``.../gain_over_prior``: the same per family, and over every sample as the family
  ``all``, over the whole validation set (:class:`FamilyBandPSNR`, synced across ranks).

Regions (band width ``eval.band_width``, 8 px): ``band`` is every pixel within the width of
the mask's boundary on both sides (:func:`~pixperfect.metrics.boundary_band`), ``inside``
the rest of the mask, ``outside`` the rest of the photo; a region without pixels in the
batch reads NaN. A sample counts in every family applied to it (``colour+texture`` counts
for both), as in the evaluation's family table. The training step's values are this rank's
share of the batch (rank 0's in TensorBoard, as the losses); ``grad/*`` are of the averaged
gradients, the same on every rank.

Module hooks are registered on the live generator for the logged step's forward only
(:meth:`Diagnostics.watch`) and removed after it: the EMA copy never has them, DDP wraps the
module that owns the generator and leaves its hooks alone, and nothing stays registered
for a checkpoint or a copy to carry.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torchmetrics import Metric

from data_sim.simulator import FAMILIES, family_names
from imageops.morphology import max_filter
from pixperfect.metrics import band_psnr, boundary_band
from pixperfect.models.colour_prior import apply_colour_prior

REGIONS = ("inside", "band", "outside")
ADAM_EPS = 1e-8  # torch.optim.Adam's default, used when the optimiser does not say


def regions(mask: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
    """The three disjoint regions of :data:`REGIONS`, each (B, 1, H, W) bool."""
    inside = mask > 0.5
    band = boundary_band(mask, width)
    return {"inside": inside & ~band, "band": band, "outside": ~inside & ~band}


def region_mean_max(
    values: torch.Tensor, region: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, max) of ``values`` (B, C, H, W) over ``region`` (B, 1, H, W) and the channels,
    pooled over the batch; NaN when the region is empty."""
    region = region.expand_as(values)
    count = region.sum()
    mean = (values * region).sum() / count  # 0 / 0 = NaN for an empty region
    peak = values.masked_fill(~region, -math.inf).amax()
    return mean, torch.where(count > 0, peak, torch.full_like(peak, math.nan))


LABELS = (*FAMILIES, "all")  # the validation groups: each family, and every sample
HARM_DB = 0.5  # a sample loses more than this against identity: harmed (as evaluate counts)


def membership(families: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, len(LABELS)) float: 1 where sample i has family j, and 1 in the last column
    ("all") for every sample; ``families[i]`` is its names joined by ``+`` (empty: a clean
    sample, in no family but in "all")."""
    rows = [[float(name in s.split("+")) for name in FAMILIES] + [1.0] for s in families]
    return torch.tensor(rows, device=device).reshape(len(families), len(LABELS))


def parameter_levels(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of ``model`` by level: its top-level children by name, a
    ``ModuleList``/``ModuleDict`` split into its entries (``down.0``, ``down.1``, ...); a
    parameter of ``model`` itself is its own level. Every parameter in exactly one level."""
    children = dict(model.named_children())
    levels: dict[str, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        split = isinstance(children.get(parts[0]), nn.ModuleList | nn.ModuleDict)
        key = ".".join(parts[:2]) if split and len(parts) > 2 else parts[0]
        levels.setdefault(key, []).append(parameter)
    return levels


def gradient_scalars(model: nn.Module, eps: float = ADAM_EPS) -> dict[str, torch.Tensor]:
    """``grad/<level>`` (mean |grad| per element; a missing gradient counts as 0),
    ``grad/head_over_deepest`` (with a ``head`` level) and ``grad/levels_below_adam_eps``."""
    out: dict[str, torch.Tensor] = {}
    for key, parameters in parameter_levels(model).items():
        sums = [
            p.grad.detach().float().abs().sum()
            if p.grad is not None
            else torch.zeros((), device=p.device)
            for p in parameters
        ]
        out[f"grad/{key}"] = torch.stack(sums).sum() / sum(p.numel() for p in parameters)
    if not out:
        return out
    means = torch.stack(list(out.values()))
    if "grad/head" in out:
        out["grad/head_over_deepest"] = out["grad/head"] / means.min().clamp_min(1e-30)
    out["grad/levels_below_adam_eps"] = (means < eps).sum().float()
    return out


class FamilyBandPSNR(Metric):
    """Per artifact family, and over every sample ("all"), over a validation set: the mean
    band PSNR of the refined images, of the composites (the identity) and, for a refiner
    with a colour prior, of the prior alone; and the share of samples the refiner harms
    (more than ``HARM_DB`` below identity), from per-sample sums and counts (synced across
    ranks by torchmetrics). :meth:`scalars` names the groups seen."""

    full_state_update = False

    def __init__(self, band_width: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.band_width = band_width
        n = len(LABELS)
        for state in ("refined", "identity", "prior", "harmed", "count", "prior_count"):
            self.add_state(state, torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        refined: torch.Tensor,
        composite: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        families: list[str] | None,
        prior: torch.Tensor | None = None,
    ) -> None:
        """``families``: one ``+``-joined string per sample; None adds nothing (a batch
        without labels still counts as an update, so every rank computes alike).
        ``prior``: the colour prior's image of the composites, scored alongside."""
        if families is None or len(families) != refined.shape[0]:
            return
        member = membership(families, refined.device).double()
        scored = band_psnr(refined, target, mask, self.band_width).double()
        identity = band_psnr(composite, target, mask, self.band_width).double()
        self.refined += scored @ member
        self.identity += identity @ member
        self.harmed += (scored < identity - HARM_DB).double() @ member
        self.count += member.sum(0)
        if prior is not None:
            self.prior += band_psnr(prior, target, mask, self.band_width).double() @ member
            self.prior_count += member.sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "refined": self.refined,
            "identity": self.identity,
            "prior": self.prior,
            "harmed": self.harmed,
            "count": self.count,
            "prior_count": self.prior_count,
        }

    def scalars(self) -> dict[str, torch.Tensor]:
        """``val_family/<family>/...`` for every family with samples, then a reset."""
        totals = self.compute()
        out = {}
        for j, name in enumerate(LABELS):
            n = float(totals["count"][j])
            if n > 0:
                refined, identity = totals["refined"][j] / n, totals["identity"][j] / n
                out[f"val_family/{name}/band_psnr"] = refined.float()
                out[f"val_family/{name}/identity_band_psnr"] = identity.float()
                out[f"val_family/{name}/band_psnr_gain"] = (refined - identity).float()
                out[f"val_family/{name}/harm_rate"] = (100 * totals["harmed"][j] / n).float()
            if float(totals["prior_count"][j]) > 0:
                prior = totals["prior"][j] / totals["prior_count"][j]
                out[f"val_family/{name}/prior_band_psnr"] = prior.float()
                out[f"val_family/{name}/gain_over_prior"] = (refined - prior).float()
        self.reset()
        return out


class _Tap:
    """While registered on ``module``: its output (detached) of the last forward, and the L2
    norm of the gradient that reaches its input through it."""

    def __init__(self, module: nn.Module) -> None:
        self.output: torch.Tensor | None = None
        self.input_grad_norm: torch.Tensor | None = None
        self._handles = [
            module.register_forward_pre_hook(self._before),
            module.register_forward_hook(self._after),
        ]

    def _before(self, module: nn.Module, args: tuple):
        x, *rest = args
        if not (torch.is_grad_enabled() and x.requires_grad):
            return None
        x = x.view_as(x)  # a node of its own: its gradient is this module's share only
        x.register_hook(self._gradient)
        return (x, *rest)

    def _gradient(self, grad: torch.Tensor) -> None:
        self.input_grad_norm = torch.linalg.vector_norm(grad.detach().float())

    def _after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.output = output.detach()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class Diagnostics(nn.Module):
    """The diagnostics of one :class:`RefinerModule` (see the module docstring). A module
    only to carry :class:`FamilyBandPSNR` to the device; it holds no weights and adds
    nothing to the state dict."""

    def __init__(self, band_width: int = 8) -> None:
        super().__init__()
        self.band_width = band_width
        self.val_families = FamilyBandPSNR(band_width)
        self._taps: dict[str, _Tap] = {}
        self._edit_margin = -1
        self._families: list[str] | None = None  # the batch's, from the loader

    # -- the batch's artifact families --------------------------------------------------

    def take_families(self, batch) -> None:
        """Before a batch goes to the device: take its ``families`` strings out of it."""
        self._families = batch.pop("families", None) if isinstance(batch, dict) else None

    def simulated(self, params: dict, n: int, needed: bool = True) -> None:
        """The batch of ``n`` was simulated in the step: its families are read from
        ``params`` now, beside the simulation (the parameters are drawn on the host), where
        ``needed``."""
        self._families = ["+".join(family_names(params, i)) for i in range(n)] if needed else None

    def families(self, n: int) -> list[str] | None:
        """The current batch's families (``+``-joined per sample), None when unknown."""
        if self._families is not None and len(self._families) == n:
            return list(self._families)
        return None

    # -- the training step --------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, generator: nn.Module, enabled: bool = True):
        """Taps on ``generator``'s head and gate for the forward inside the block (when
        ``enabled``), removed at its end; their gradients arrive in the backward after it."""
        self._taps = {}
        if enabled:
            self._edit_margin = getattr(generator, "edit_margin", -1)
            head, gate = getattr(generator, "head", None), getattr(generator, "gate", None)
            if isinstance(head, nn.Module):
                self._taps["head"] = _Tap(head)
            if gate is not None and isinstance(getattr(gate, "conv", None), nn.Module):
                self._taps["gate"] = _Tap(gate.conv)
        try:
            yield self
        finally:
            for tap in self._taps.values():
                tap.remove()

    @torch.no_grad()
    def training_scalars(self, batch: dict, refined: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's ``diag/*`` and ``train_family/*`` values (after the backward, for the
        gradient norms); forgets the taps."""
        mask = batch["mask"]
        where = regions(mask, self.band_width)
        out: dict[str, torch.Tensor] = {}
        gate, head = self._taps.get("gate"), self._taps.get("head")
        if gate is not None and gate.output is not None:
            opening = torch.sigmoid(gate.output.float())
            for name, region in where.items():
                out[f"diag/gate_open_{name}"] = region_mean_max(opening, region)[0]
        if head is not None and head.output is not None:
            correction = head.output.float()
            if self._edit_margin >= 0:
                correction = correction * max_filter(mask.float(), self._edit_margin)
            levels = correction.abs() * 255
            for name, region in where.items():
                mean, peak = region_mean_max(levels, region)
                out[f"diag/correction_mean_{name}"] = mean
                out[f"diag/correction_max_{name}"] = peak
        for name, tap in self._taps.items():
            if tap.input_grad_norm is not None:
                out[f"diag/grad_body_via_{name}"] = tap.input_grad_norm
        self._taps = {}
        out.update(self._family_gains(batch, refined))
        return out

    def _family_gains(self, batch: dict, refined: torch.Tensor) -> dict[str, torch.Tensor]:
        families = self.families(refined.shape[0])
        if families is None:
            return {}
        member = membership(families)  # on the host: the counts need no device sync
        counts = member.sum(0)
        target, mask = batch["target"], batch["mask"]
        gain = band_psnr(refined, target, mask, self.band_width)
        gain = gain - band_psnr(batch["composite"], target, mask, self.band_width)
        means = (gain @ member.to(gain.device)) / counts.clamp_min(1).to(gain.device)
        present = {name for s in families for name in s.split("+")} | {LABELS[-1]}
        return {  # the families this step has samples of
            f"train_family/{name}/band_psnr_gain": means[j]
            for j, name in enumerate(LABELS)
            if name in present
        }

    # -- validation -------------------------------------------------------------------

    def update_validation(
        self, batch: dict, refined: torch.Tensor, colour_prior: str = "none"
    ) -> None:
        """Score a validation batch; with a ``colour_prior``, the prior alone beside it."""
        composite, target, mask = batch["composite"], batch["target"], batch["mask"]
        families = self.families(refined.shape[0])
        prior = None
        if colour_prior != "none":
            prior = apply_colour_prior(colour_prior, composite.float(), mask)
        self.val_families.update(refined, composite, target, mask, families, prior)

    def validation_scalars(self) -> dict[str, torch.Tensor]:
        """``val_family/*`` over the validation set (synced), then a reset."""
        return self.val_families.scalars()
