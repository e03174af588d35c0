"""``pixperfect evaluate``: the refiner side by side with what a user would otherwise use.

Data, one of:

- a folder of real triples (``--dataset DIR``), laid out as
  ``DIR/edited/<stem>.png``, ``DIR/mask/<stem>.png``, ``DIR/target/<stem>.png``
  (see :mod:`pixperfect.evaluation.dataset`);
- held-out photos (``--images DIR``, or the config's ``data.holdout`` / ``data.val_images``)
  turned into artifact triples by the seeded simulator recipe (``eval.samples_per_image``
  per photo, ``eval.seed``): the same triples on every run.

Methods (``--methods`` picks a subset; all available ones by default):

- ``identity``: the composite as the editor hands it over;
- ``reinhard``, ``seam_affine``, ``poisson``, ``laplacian``: classical fixes, see
  :mod:`pixperfect.evaluation.baselines` (every entry of its ``BASELINES``);
- ``refiner``: the checkpoint's generator, its EMA weights when it kept them (``--ckpt``),
  or an export folder's model (``--model DIR``);
- ``refiner_raw``: the non-EMA weights, when the checkpoint has both;
- ``refiner_pooled``: the refiner with test-time pooling over N jittered copies
  (``--pooling N``, N > 1);
- ``pretrained``: the shipped reference refiner (``Refiner.from_pretrained()``), only when
  asked for (``--pretrained`` or by name): to see a model you trained beside it.

Metrics: the weight-free seam metrics of :mod:`pixperfect.metrics` (whole image, the
boundary band, and its inner and outer halves), the texture gap across the seam and the
share of identity's gap each method closes (:mod:`pixperfect.texture_gap`) and, where
their weights are staged locally, the perceptual ones of
:mod:`pixperfect.evaluation.perceptual` (LPIPS, FID, U-IDS, P-IDS). Every score is a mean
over samples (the texture gap over those whose mask leaves it rings). Outputs are scored
as they are (no forced paste-back). Each method but identity is also compared with
identity sample by sample (:mod:`pixperfect.evaluation.breakdown`): its mean band-PSNR
gain (``band_psnr_gain``), its ``harm_rate`` (% of samples it makes more than 0.5 dB
worse in the band) and its gain per bucket of identity band PSNR (how bad the seam was).

Reports (``--out results.json``): ``results.json`` (means, the buckets, per-sample seam
scores, what was left out and why), ``results.md`` (methods x metrics and the bucket
table), ``results.csv`` (methods x metrics), and ``cases.png``: the worst and best cases
by the refiner's band-PSNR gain over identity; the tables and files are
:mod:`pixperfect.evaluation.report`'s.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from data_sim.simulator import ArtifactSimulator
from pixperfect.config import sim_config
from pixperfect.data.crops import heldout_triples
from pixperfect.data.photos import load_folder, load_photos
from pixperfect.errors import InputError
from pixperfect.evaluation.baselines import BASELINES
from pixperfect.evaluation.breakdown import (
    HARM_MARGIN_DB,
    compare_by_family,
    compare_to_identity,
)
from pixperfect.evaluation.cases import CaseTracker, make_tiles, write_case_sheet
from pixperfect.evaluation.dataset import load_triples
from pixperfect.evaluation.perceptual import (
    PerceptualScores,
    load_perceptual,
)
from pixperfect.evaluation.report import BAND_METRICS, COMPARISON_METRICS, DIRECTION
from pixperfect.imageio import Image, write_image
from pixperfect.inference import Refiner
from pixperfect.metrics import METRIC_NAMES, seam_scores
from pixperfect.texture_gap import TEXTURE_METRICS, summarise, texture_balance, texture_rings

log = logging.getLogger(__name__)
Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (composite, mask) -> image

REFINER_METHODS = ("refiner", "refiner_raw", "refiner_pooled")
PRETRAINED = "pretrained"  # the shipped reference refiner; never among the defaults
CASE_TILE = 128  # px, one tile of the cases sheet


def all_methods() -> tuple[str, ...]:
    """Every method ``evaluate`` scores, in table order; read from :data:`BASELINES` at each
    call, so a registered baseline is a method."""
    return ("identity", *BASELINES, *REFINER_METHODS, PRETRAINED)


def _identity(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return composite


def _load_refiners(checkpoint: str | Path, device: str) -> tuple[Refiner, Refiner | None]:
    """(the refiner ``refine`` uses, its non-EMA twin when the checkpoint holds both).
    ``checkpoint``: a training checkpoint, or an export folder (one set of weights)."""
    if Path(checkpoint).is_dir():
        return Refiner.from_pretrained(checkpoint, device), None
    refiner = Refiner.from_checkpoint(checkpoint, device)
    if refiner.weights != "ema":
        return refiner, None  # the refiner already is the raw generator
    return refiner, Refiner.from_checkpoint(checkpoint, device, ema=False)


def _pooled(refiner: Refiner, pooling: int, seed: int) -> Refiner:
    """The refiner with test-time pooling over ``pooling`` jittered copies: a shallow copy
    that shares the network, so the plain ``refiner`` row stays unpooled."""
    pooled = copy.copy(refiner)
    pooled.pooling, pooled.seed = pooling, seed
    return pooled


def build_methods(
    names: list[str] | None,
    checkpoint: str | Path | None,
    device: str = "cpu",
    pooling: int = 1,
    seed: int = 0,
    pretrained: bool = False,
) -> dict[str, Method]:
    """The methods to compare, in table order. ``names`` None: every available one; a name
    that is asked for but cannot be had (no checkpoint, no EMA, no pooling) is an error."""
    every = all_methods()
    unknown = [n for n in names or [] if n not in every]
    if unknown:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(every)}")
    defaults = [n for n in every if n != PRETRAINED]
    wanted = defaults if names is None else [n for n in every if n in names]
    if pretrained and PRETRAINED not in wanted:
        wanted.append(PRETRAINED)
    explicit = names is not None
    methods: dict[str, Method] = {}
    refiner = raw = None
    if any(n in REFINER_METHODS for n in wanted) and checkpoint is not None:
        refiner, raw = _load_refiners(checkpoint, device)
    for name in wanted:
        if name == "identity":
            methods[name] = _identity
        elif name in BASELINES:
            methods[name] = BASELINES[name]
        elif name == PRETRAINED:
            methods[name] = Refiner.from_pretrained(None, device)
        elif refiner is None:
            if explicit:
                raise InputError(f"method {name!r} needs a model: pass --ckpt CKPT or --model DIR")
        elif name == "refiner":
            methods[name] = refiner
        elif name == "refiner_raw":
            if raw is not None:
                methods[name] = raw
            elif explicit:
                raise InputError(
                    f"method 'refiner_raw' needs a checkpoint with EMA weights; {checkpoint} "
                    "has only one set of generator weights (scored as 'refiner')"
                )
        elif name == "refiner_pooled":
            if pooling > 1:
                methods[name] = _pooled(refiner, pooling, seed)
            elif explicit:
                raise InputError("method 'refiner_pooled' needs --pooling N with N > 1")
    if not methods:
        raise InputError("no method to evaluate")
    return methods


def _samples(cfg: DictConfig, images: str | Path | None, dataset: str | Path | None):
    """(triples, description) from a triples folder or simulated from photos."""
    e = cfg.eval
    if dataset is not None:
        if images is not None:
            raise InputError("pass either --dataset (triples) or --images (photos), not both")
        triples = load_triples(dataset)
        return triples, {"kind": "triples", "path": str(dataset), "photos": len(triples)}
    photos = load_folder(images) if images else load_photos(cfg)[1]
    if not photos:
        raise InputError(
            "no held-out photos: pass --dataset DIR (triples), --images DIR (photos) or set "
            "data.holdout / data.val_images"
        )
    triples = heldout_triples(
        photos,
        ArtifactSimulator(sim_config(cfg)),
        e.samples_per_image,
        e.seed,
        crop_size=e.crop_size,
        max_size=e.max_size,
    )
    source = str(images) if images else "config (data.holdout / data.val_images)"
    return triples, {"kind": "simulated", "images": source, "photos": len(photos)}


def evaluate(
    cfg: DictConfig,
    checkpoint: str | Path | None,
    images: str | Path | None = None,
    device: str = "cpu",
    examples_dir: str | Path | None = None,
    examples_per_photo: int = 0,
    *,
    dataset: str | Path | None = None,
    methods: list[str] | None = None,
    pooling: int = 1,
    perceptual: bool = True,
    inception_weights: str | Path | None = None,
    cases_path: str | Path | None = None,
    cases: int = 4,
    pretrained: bool = False,
) -> dict:
    """Score each method on the evaluation triples (module docstring); returns the results
    dict that :func:`write_results` and the ``format_*`` functions take.

    ``examples_dir``: the first ``examples_per_photo`` samples of each photo (each triple of
    a ``dataset``) are written there as PNGs (composite, mask, target and each method's
    output), ready for ``pixperfect refine``. ``cases_path``: a PNG sheet of the ``cases``
    worst and best samples. ``perceptual``: also LPIPS / FID / U-IDS / P-IDS where their
    weights are staged (``results["skipped"]`` says what is missing otherwise).
    """
    e = cfg.eval
    triples, source = _samples(cfg, images, dataset)
    chosen = build_methods(methods, checkpoint, device, pooling, e.seed, pretrained)
    scorer, skipped = _perceptual_scorer(cfg, perceptual, inception_weights, device)
    rank = _rank_method(chosen)
    tracker = CaseTracker(cases if cases_path is not None and rank is not None else 0)

    # One pass over the triples: each method runs once per sample, and its output is
    # scored, offered to the cases sheet and written as an example before the next sample.
    per_sample = []
    for sample in tqdm(triples, desc="evaluate", unit="image", leave=False):
        composite, mask = sample["composite"][None], sample["mask"][None]
        outputs = {name: method(composite, mask) for name, method in chosen.items()}
        record = score_sample(sample, outputs, e.band_width)
        per_sample.append(record)
        if scorer is not None:
            scorer.update(outputs, sample["target"][None])
        if rank is not None:
            gain = record["scores"][rank]["band_psnr"] - record["identity_band_psnr"]
            _track_case(tracker, sample, outputs, gain)
        if examples_dir is not None:
            _write_example(Path(examples_dir), sample, outputs, examples_per_photo)

    by_family = source.get("kind") == "simulated"  # real triples carry no family labels
    scored = aggregate(per_sample, chosen, scorer, by_family)
    metric_names = scored["metrics"]
    results = {
        "methods": scored["methods"],
        "metrics": metric_names,
        "higher_is_better": {m: DIRECTION[m] for m in metric_names},
        "band_metrics": [m for m in metric_names if m in BAND_METRICS],
        "skipped": skipped,
        "dataset": source,
        "photos": source["photos"],
        "samples": len(triples),
        "texture_gap_samples": scored["texture_gap_samples"],  # those whose mask has rings
        "band_width": e.band_width,
        "seed": e.seed,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "pooling": pooling if "refiner_pooled" in chosen else None,
        "harm_margin_db": HARM_MARGIN_DB,
        "buckets": scored["buckets"],
        "families": scored["families"],
        "per_sample": per_sample,
    }
    if tracker.k:
        results["cases"] = _write_cases(tracker, chosen, rank, cases_path)
    return results


# ---------------------------------------------------------------- scoring


def _perceptual_scorer(
    cfg: DictConfig, perceptual: bool, inception_weights: str | Path | None, device: str
) -> tuple[PerceptualScores | None, dict[str, str]]:
    """(the LPIPS / FID / U-IDS / P-IDS accumulator, or None when off or nothing is staged;
    what was left out and why)."""
    if not perceptual:
        return None, {}
    nets = load_perceptual(cfg.loss.lpips_net, cfg.loss.lpips_weights, inception_weights, device)
    return (PerceptualScores(nets, device) if nets.names else None), dict(nets.missing)


def score_sample(sample: dict, outputs: dict[str, torch.Tensor], band_width: int) -> dict:
    """One sample's record in ``results["per_sample"]``: each output's seam scores and
    texture gap (None where the mask leaves no rings), and the composite's band PSNR and
    texture gap, which every gain over identity and every gap closed is measured from."""
    target, composite = sample["target"][None], sample["composite"][None]
    mask = sample["mask"][None]
    scores = {
        name: {k: float(v[0]) for k, v in seam_scores(out, target, mask, band_width).items()}
        for name, out in outputs.items()
    }
    gaps = _texture_gaps({"identity": composite, **outputs}, target, mask, band_width)
    for name in scores:
        scores[name]["texture_gap"] = gaps[name]
    if "identity" in scores:
        reference = scores["identity"]["band_psnr"]
    else:  # identity not asked for: its band PSNR is still the reference of every gain
        reference = float(seam_scores(composite, target, mask, band_width)["band_psnr"][0])
    return {
        "name": sample["name"],
        "families": sample["families"].split("+") if sample.get("families") else [],
        "identity_band_psnr": reference,
        "identity_texture_gap": gaps["identity"],
        "scores": scores,
    }


def _texture_gaps(
    images: dict[str, torch.Tensor], target: torch.Tensor, mask: torch.Tensor, band_width: int
) -> dict[str, float | None]:
    """Each image's texture gap against ``target`` (:mod:`pixperfect.texture_gap`), dB;
    None when the mask leaves a ring too small. The rings and the target's balance are
    computed once."""
    rings = texture_rings(mask, band_width)
    reference = texture_balance(target, rings)
    gaps = {}
    for name, image in images.items():
        gap = float((texture_balance(image.clamp(0, 1), rings) - reference).abs()[0])
        gaps[name] = gap if math.isfinite(gap) else None
    return gaps


def aggregate(
    per_sample: list[dict],
    methods: dict[str, Method],
    scorer: PerceptualScores | None,
    by_family: bool,
) -> dict:
    """Means over samples per method (seam metrics, the texture gap and the share of
    identity's it closes, the perceptual ones, and the comparison with identity), the metric
    names in table order, the gain per identity band-PSNR bucket
    and, when ``by_family``, per artifact family."""
    n = max(len(per_sample), 1)
    means = {
        name: {m: sum(s["scores"][name][m] for s in per_sample) / n for m in METRIC_NAMES}
        for name in methods
    }
    identity_gaps = [s["identity_texture_gap"] for s in per_sample]
    for name in methods:
        gaps = [s["scores"][name]["texture_gap"] for s in per_sample]
        means[name].update(summarise(gaps, identity_gaps))
    metric_names = [*METRIC_NAMES, *TEXTURE_METRICS]
    if scorer is not None:
        extra = scorer.compute()
        for name in methods:
            means[name].update(extra.get(name, {}))
        metric_names += scorer.perceptual.names
    band_psnr = {name: [s["scores"][name]["band_psnr"] for s in per_sample] for name in methods}
    identity_psnr = [s["identity_band_psnr"] for s in per_sample]
    comparison = compare_to_identity(band_psnr, identity_psnr)
    for name, scores in comparison["methods"].items():
        means[name].update(scores)
    families = None
    if by_family:
        families = compare_by_family(band_psnr, identity_psnr, [s["families"] for s in per_sample])
    if comparison["methods"]:
        metric_names += COMPARISON_METRICS
    return {
        "methods": means,
        "metrics": metric_names,
        "texture_gap_samples": sum(g is not None for g in identity_gaps),
        "buckets": comparison["buckets"],
        "families": families,
    }


# ---------------------------------------------------------------- ranking


def _rank_method(methods: dict[str, Method]) -> str | None:
    """Whose band-PSNR gain over identity orders the cases sheet."""
    for name in (*REFINER_METHODS, *BASELINES):
        if name in methods:
            return name
    return None


def _track_case(
    tracker: CaseTracker, sample: dict, outputs: dict[str, torch.Tensor], gain: float
) -> None:
    """Offer one sample to the cases sheet; its tiles are made only if it ranks."""
    if not tracker.wants(gain):
        return
    row = {"composite": sample["composite"], **{k: v[0] for k, v in outputs.items()}}
    row.pop("identity", None)  # the composite itself
    row.update(target=sample["target"], mask=sample["mask"])
    tracker.add(gain, sample["name"], make_tiles(row, sample["mask"], CASE_TILE))


def _write_cases(
    tracker: CaseTracker, methods: dict[str, Method], rank: str, path: str | Path
) -> dict:
    """Write the cases sheet; its entry in the results (path, ranking, worst and best)."""
    columns = ["composite", *(m for m in methods if m != "identity"), "target", "mask"]
    label = f"{rank} band-PSNR gain over identity (dB)"
    sheet = write_case_sheet(tracker, columns, path, label)
    return {
        "path": str(sheet) if sheet else None,
        "ranked_by": label,
        **{
            title: [{"name": name, "gain_db": score} for score, name, _ in rows]
            for title, rows in tracker.sections()
        },
    }


# ---------------------------------------------------------------- examples


def _write_example(
    directory: Path, sample: dict, outputs: dict[str, torch.Tensor], per_photo: int
) -> None:
    """PNGs of the sample and each method's output, if it is among its photo's first
    ``per_photo`` samples."""
    photo, index = sample["name"].rsplit("#", 1)
    if int(index) >= per_photo:
        return
    images = {k: sample[k][None] for k in ("composite", "mask", "target")}
    images.update(outputs)
    images.pop("identity", None)  # identical to the composite
    save_example(directory, f"{safe_name(photo)}_{index}", images)


def safe_name(name: str) -> str:
    """A file-name stem from a photo name (which may be a relative path)."""
    return "".join(c if c.isalnum() or c in "-" else "_" for c in str(Path(name).with_suffix("")))


def save_example(directory: Path, stem: str, images: dict[str, torch.Tensor]) -> None:
    """8-bit PNGs ``<stem>_<kind>.png`` for (1, C, H, W) images in [0, 1]."""
    for kind, image in images.items():
        pixels = image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        write_image(directory / f"{stem}_{kind}.png", Image(pixels))


# ---------------------------------------------------------------- reports
