"""``pixperfect evaluate``: score methods on held-out photos with seeded artifacts.

Methods: ``identity`` (the raw composite, what the editor hands the user) and ``refiner``
(the trained checkpoint). Metrics: see :mod:`pixperfect.metrics`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from data_sim.simulator import ArtifactSimulator
from pixperfect.config import sim_config
from pixperfect.data.crops import heldout_triples
from pixperfect.data.datamodule import load_photos
from pixperfect.data.photos import load_folder
from pixperfect.imageio import Image, write_image
from pixperfect.inference import Refiner
from pixperfect.metrics import METRIC_NAMES, SeamMetrics

log = logging.getLogger(__name__)
Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (composite, mask) -> image


def evaluate(
    cfg: DictConfig,
    checkpoint: str | Path | None,
    images: str | Path | None = None,
    device: str = "cpu",
    examples_dir: str | Path | None = None,
    examples_per_photo: int = 0,
) -> dict:
    """Scores per method on held-out triples; ``images`` (a folder) replaces the config's
    held-out photos. With ``examples_dir``, the first ``examples_per_photo`` samples of each
    photo are written there as PNG files (composite, mask, target and each method's
    output), ready for ``pixperfect refine``."""
    photos = load_folder(images) if images else load_photos(cfg)[1]
    if not photos:
        raise ValueError(
            "no held-out photos: pass --images DIR or set data.holdout / data.val_images"
        )
    e = cfg.eval
    triples = heldout_triples(
        photos,
        ArtifactSimulator(sim_config(cfg)),
        e.samples_per_image,
        e.seed,
        crop_size=e.crop_size,
        max_size=e.max_size,
    )
    methods: dict[str, Method] = {"identity": lambda composite, mask: composite}
    if checkpoint is not None:
        methods["refiner"] = Refiner.from_checkpoint(checkpoint, device)

    metrics = {name: SeamMetrics(band_width=e.band_width) for name in methods}
    for sample in tqdm(triples, desc="evaluate", unit="image", leave=False):
        target, composite = sample["target"][None], sample["composite"][None]
        mask = sample["mask"][None]
        outputs = {name: method(composite, mask) for name, method in methods.items()}
        for name, output in outputs.items():
            metrics[name].update(output, target, mask)
        photo, index = sample["name"].rsplit("#", 1)
        if examples_dir is not None and int(index) < examples_per_photo:
            images_out = {"composite": composite, "mask": mask, "target": target, **outputs}
            images_out.pop("identity", None)  # identical to the composite
            save_example(Path(examples_dir), f"{safe_name(photo)}_{index}", images_out)
    return {
        "methods": {
            name: {k: float(v) for k, v in m.compute().items()} for name, m in metrics.items()
        },
        "photos": len(photos),
        "samples": len(triples),
        "band_width": e.band_width,
        "seed": e.seed,
        "checkpoint": str(checkpoint) if checkpoint else None,
    }


def safe_name(name: str) -> str:
    """A file-name stem from a photo name (which may be a relative path)."""
    return "".join(c if c.isalnum() or c in "-" else "_" for c in str(Path(name).with_suffix("")))


def save_example(directory: Path, stem: str, images: dict[str, torch.Tensor]) -> None:
    """8-bit PNGs ``<stem>_<kind>.png`` for (1, C, H, W) images in [0, 1]."""
    for kind, image in images.items():
        pixels = image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        write_image(directory / f"{stem}_{kind}.png", Image(pixels))


def format_table(results: dict) -> str:
    """A fixed-width table: methods as rows, metrics as columns, band metrics marked."""
    header = f"{'method':<12}" + "".join(f"{m:>11}" for m in METRIC_NAMES)
    lines = [header, "-" * len(header)]
    for name, scores in results["methods"].items():
        cells = "".join(
            f"{scores[m]:>11.2f}" if "psnr" in m else f"{scores[m]:>11.4f}" for m in METRIC_NAMES
        )
        lines.append(f"{name:<12}{cells}")
    lines.append(
        f"({results['samples']} samples from {results['photos']} held-out photos; band = "
        f"{results['band_width']} px either side of the mask boundary; PSNR in dB, higher is "
        "better; L1 lower is better)"
    )
    return "\n".join(lines)


def write_results(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    return path
