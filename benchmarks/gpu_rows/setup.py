"""What every row of the GPU check shares: the scale (the paper's on CUDA, tiny on a CPU),
the shared assets, configs/paper.yaml made runnable on this device, the photos, and
:class:`Setup`, which carries them and the header's ``info`` and ``notes``."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from harness import ROOT
from omegaconf import DictConfig

from pixperfect.config import load_config
from pixperfect.data.photos import SKIMAGE_PHOTOS, list_images

PAPER = ROOT / "configs" / "paper.yaml"


SHARED = ROOT.parent / "shared"


DEFAULT_TAESD = SHARED / "weights" / "taesd"


TAESD_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")


WARMUP = 3  # steps not timed: kernel selection, codec loading, allocator growth


SPEEDUP_TARGET = 10.0


# CPU only: a model and batch small enough for a test to run the whole check.
TINY_MODEL = ["model.base_channels=8", "model.ffc_blocks=1", "gan.base_channels=8"]


@dataclass
class Scale:
    crop: int
    batch: int
    steps: int  # timed steps of row 1
    sync_steps: int
    sim_size: int
    sim_batch: int
    sim_draws: int
    precompute_size: int
    precompute_photos: int
    precompute_crops: int  # per photo
    ddp_steps: int
    model: list[str] = field(default_factory=list)


PAPER_SCALE = Scale(512, 2, 32, 4, 256, 16, 5, 512, 6, 8, 50)


TINY_SCALE = Scale(64, 2, 4, 2, 64, 4, 3, 64, 2, 2, 8, TINY_MODEL)


class SharedAssetMissing(RuntimeError):
    pass


def shared_asset(path: Path, files: tuple[str, ...] = ()) -> Path | None:
    """``path`` if it (and ``files`` in it) exists; else None, or under CI=true a failure."""
    missing = [path / f for f in files if not (path / f).is_file()] if path.is_dir() else [path]
    if not missing:
        return path
    if os.environ.get("CI") == "true":
        raise SharedAssetMissing(f"shared asset missing under CI=true: {missing[0]}")
    return None


def paper_overrides(args, device: torch.device, scale: Scale, steps: int, vae: Path | None):
    """configs/paper.yaml made runnable here: crop, batch, steps, every term on from step 0,
    the codec's and LPIPS' weights, the tiny model on a CPU."""
    overrides = [
        f"data.crop_size={scale.crop}",
        f"data.val_crop_size={scale.crop}",
        f"data.batch_size={scale.batch}",
        f"trainer.max_steps={steps}",
        "loss.tone.warmup_steps=0",
        "gan.warmup_steps=0",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "trainer.strategy=auto",
    ]
    if device.type != "cuda":
        overrides.append("data.num_workers=0")
    if vae is not None:
        overrides.append(f"sim.texture.vae.path={vae.resolve()}")
    else:
        overrides.append("sim.texture.vae.kind=none")
    if args.lpips_weights:
        overrides.append(f"loss.lpips_weights={Path(args.lpips_weights).resolve()}")
    else:
        overrides.append("loss.lpips_missing=skip")
    return [*overrides, *scale.model, *args.overrides]


def photo_sources(arg: str, limit: int) -> list[str]:
    """Sources for :func:`load_source`: scikit-image's training photos (the paper's
    held-out chelsea and coffee left out) or the first ``limit`` images of a folder."""
    if arg == "skimage":
        return [f"skimage:{n}" for n in SKIMAGE_PHOTOS if n not in ("chelsea", "coffee")][:limit]
    return [str(p) for p in list_images(arg)[:limit]]


def pick_scale(args, device: torch.device) -> Scale:
    base = PAPER_SCALE if device.type == "cuda" else TINY_SCALE
    chosen = {
        "crop": args.crop_size,
        "batch": args.batch_size,
        "steps": args.steps,
        "sync_steps": args.sync_steps,
        "sim_size": args.sim_size,
        "sim_batch": args.sim_batch,
        "sim_draws": args.sim_draws,
        "ddp_steps": args.ddp_steps,
    }
    values = {k: v for k, v in vars(base).items()}
    values.update({k: v for k, v in chosen.items() if v is not None})
    return Scale(**values)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


@dataclass
class Setup:
    """What every row's measurement shares: the device, the scale, the paper config made
    runnable here, the photos, and the header (``info``) and ``notes`` filled in as rows run."""

    args: argparse.Namespace
    device: torch.device
    scale: Scale
    vae: Path | None  # the TAEF2 weights; None: the codec is off
    sources: list[str]
    steps: int  # of the row-1 fit: warm-up, timed and sync-counted steps
    cfg: DictConfig
    info: dict
    notes: list[str]

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def codec(self) -> str:
        return f"codec {'on the ' + self.device.type if self.vae else 'OFF'}"


def setup(args) -> Setup:
    """The scale, the shared assets and configs/paper.yaml with this run's overrides."""
    device = torch.device(args.device)
    scale = pick_scale(args, device)
    vae = shared_asset(Path(args.taesd), TAESD_FILES) if args.taesd else None
    notes = []
    if vae is None:
        notes.append(f"codec OFF: no TAEF2 weights at {args.taesd or '(none)'} (--taesd DIR)")
    sources = photo_sources(args.photos, 16)
    steps = WARMUP + scale.steps + max(scale.sync_steps, 1)
    overrides = paper_overrides(args, device, scale, steps, vae)
    cfg = load_config(PAPER, overrides)
    info = {
        "device": device_name(device),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "scale": "paper" if device.type == "cuda" else "tiny (CPU)",
        "overrides": overrides,
    }
    return Setup(args, device, scale, vae, sources, steps, cfg, info, notes)
