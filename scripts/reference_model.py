"""Train, score and export the shipped reference refiner: ``make reference``.

    .venv/bin/python scripts/reference_model.py [--out runs/reference]
        [--weights src/pixperfect/weights/pixperfect-unet-cpu-v2]
        [--photos ../shared/data/photos/train] [--kodak ../shared/data/photos/kodak]
        [--crops-per-image 16] [key=value ...]

Four steps, each resumable (rerun the same command after an interruption):

1. **Shards**: ``pixperfect shards build`` of the training photos with
   ``configs/reference_cpu.yaml``'s recipe (default artifacts, TAEF2 round trip, training
   mix); complete shards are kept.
2. **Train**: ``pixperfect train --config configs/reference_cpu.yaml``; an interrupted run
   resumes from its last checkpoint. Every attempt's wall time is added to
   ``OUT/timing.json``, so the reported training time covers all of them.
3. **Kodak**: ``pixperfect evaluate`` on the 24 Kodak photos x 8 draws (the config's
   recipe with the codec), identity, the classical baselines and the refiner (EMA),
   without LPIPS/FID (no backbone weights on the CPU machine). Reused while newer than the
   checkpoint.
4. **Export**: ``pixperfect export`` into ``--weights`` with the provenance: the recipe
   hash, the training photos' collections with sources and licences, the Kodak table with
   the acceptance check, the timings and these commands. The default ``--weights`` is the
   package's shipped refiner (package data, :mod:`pixperfect.packaged`); its card then says
   to use it as the default (``Refiner.from_pretrained()``), not by a checkout path.

``key=value`` overrides go to every step (e.g. ``trainer.max_steps=200`` for a short try,
with ``--out`` and ``--weights`` elsewhere). Set ``OMP_NUM_THREADS`` to share the CPU
with another job (PyTorch otherwise takes every core and two such jobs contend).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from pixperfect import logged

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "photos"
CONFIG = Path("configs") / "reference_cpu.yaml"  # relative: the script works in ROOT
PIXPERFECT = [sys.executable, "-m", "pixperfect.cli"]
METHODS = "identity,reinhard,seam_affine,poisson,laplacian,refiner"
SHIPPED_USAGE = (
    "from pixperfect.inference import Refiner; Refiner.from_pretrained()(image, mask)  |  "
    "pixperfect refine --image IMG --mask MASK --out OUT"
)


def run_logged(command: list[str], log: Path) -> float:
    return logged.run_logged(command, log, ROOT)


def relative(path: Path) -> Path:
    """``path`` relative to the repository root (``../shared/...`` beside it)."""
    return Path(os.path.relpath(path, ROOT))


class Ledger:
    """``OUT/timing.json``: the wall seconds of every attempt of every step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, step: str, **entry: object) -> None:
        self.data.setdefault(step, []).append(entry)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")

    def entries(self, step: str, run: str | None = None) -> list[dict]:
        """The attempts of ``step``; with ``run``, only that training run's (a new
        ``run.name`` in the config starts a new model, whose time is its own)."""
        return [e for e in self.data.get(step, []) if run is None or e.get("run") == run]

    def total_s(self, step: str, run: str | None = None) -> float:
        return sum(float(e["wall_s"]) for e in self.entries(step, run))


def checkpoint_step(path: Path | None) -> int:
    if path is None or not path.is_file():
        return 0
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False).get("global_step", 0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reference")
    parser.add_argument("--weights", type=Path, default=None, help="export folder")
    parser.add_argument("--photos", type=Path, default=SHARED / "train")
    parser.add_argument("--kodak", type=Path, default=SHARED / "kodak")
    parser.add_argument("--crops-per-image", type=int, default=16)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def shown(command: list[str]) -> str:
    """``command`` as a user types it (``pixperfect ...``), for the provenance."""
    return shlex.join(["pixperfect", *command[len(PIXPERFECT) :]])


@dataclass
class Job:
    """What every step shares: the output folder, the config and its overrides (the same
    for every command) and the ledger of wall times."""

    out: Path
    base: list[str]  # --config CONFIG
    overrides: list[str]
    ledger: Ledger


def build_shards(job: Job, photos: Path, crops_per_image: int) -> list[str]:
    """Step 1: the training shards (a rerun keeps the complete ones); the command."""
    out, base, overrides = job.out, job.base, job.overrides
    shards = [*PIXPERFECT, "shards", "build", "--images", str(photos), *base,
              "--out", str(out / "shards"), "--crops-per-image", str(crops_per_image),
              "--shard-size", "100", *overrides]  # fmt: skip
    print(f"1/4 shards: building (resumable; log {out / 'shards.log'})", flush=True)
    seconds = run_logged(shards, out / "shards.log")
    job.ledger.add("shards", wall_s=round(seconds, 1))
    print(f"    ready in {seconds / 60:.1f} min", flush=True)
    return shards


def train_refiner(job: Job, cfg) -> tuple[list[str], Path]:
    """Step 2: train to ``trainer.max_steps``, resuming from the last checkpoint; (the
    command, the checkpoint)."""
    from pixperfect.training.run_folder import resume_checkpoint

    run_dir = Path(cfg.run.root) / cfg.run.name
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = job.out
    train = [*PIXPERFECT, "train", *job.base, *job.overrides]
    start_step = checkpoint_step(resume_checkpoint(run_dir))  # what train resumes from
    if start_step >= cfg.trainer.max_steps:
        print(f"2/4 train: done already (step {start_step})", flush=True)
    else:
        print(f"2/4 train: from step {start_step} to {cfg.trainer.max_steps} "
              f"(log {out / 'train.log'})", flush=True)  # fmt: skip
        seconds = run_logged(train, out / "train.log")
        attempt = {"wall_s": round(seconds, 1), "from_step": start_step}
        job.ledger.add("train", run=cfg.run.name, **attempt, to_step=checkpoint_step(ckpt))
        print(f"    {seconds / 60:.1f} min", flush=True)
    return train, ckpt


def evaluate_kodak(job: Job, kodak: Path, ckpt: Path) -> tuple[list[str], dict]:
    """Step 3: the Kodak table, reused while newer than the checkpoint; (the command, the
    results)."""
    out, base, overrides = job.out, job.base, job.overrides
    results_path = out / "eval" / "kodak.json"
    evaluate = [*PIXPERFECT, "evaluate", *base, "--ckpt", str(ckpt), "--images",
                str(kodak), "--methods", METHODS, "--no-perceptual",
                "--out", str(results_path), *overrides]  # fmt: skip
    fresh = results_path.is_file() and results_path.stat().st_mtime > ckpt.stat().st_mtime
    if fresh:
        print(f"3/4 Kodak: reusing {results_path}", flush=True)
    else:
        print(f"3/4 Kodak: evaluating (log {out / 'eval.log'})", flush=True)
        seconds = run_logged(evaluate, out / "eval.log")
        job.ledger.add("evaluate", wall_s=round(seconds, 1))
    return evaluate, json.loads(results_path.read_text())


def export(
    job: Job,
    ckpt: Path,
    weights: Path,
    run_name: str,
    commands: dict[str, list[str]],
    results: dict,
) -> None:
    """Step 4: the export folder, with the Kodak table, timings and commands in its
    provenance."""
    from pixperfect.inference.pretrained import SHIPPED_MODEL_DIR
    from pixperfect.release import evaluation_summary, export_checkpoint

    ledger = job.ledger
    extra = {
        "source_checkpoint": str(relative(ckpt.resolve())),  # no machine's folders
        "training": {
            "command": "make reference  (scripts/reference_model.py)",
            "train_command": shown(commands["train"]),
            "steps": checkpoint_step(ckpt),
            "train_wall_min": round(ledger.total_s("train", run_name) / 60, 1),
            "attempts": len(ledger.entries("train", run_name)),
            "machine": "2-core CPU, no GPU",
        },
        "shards": {
            "command": shown(commands["shards"]),
            "build_wall_min": round(ledger.total_s("shards") / 60, 1),
        },
    }
    if weights.resolve() == SHIPPED_MODEL_DIR:  # the default of every installation
        extra["usage"] = SHIPPED_USAGE
    summary = evaluation_summary(results, command=shown(commands["evaluate"]))
    export_checkpoint(ckpt, weights, name=weights.name, evaluation=summary, extra=extra)
    print(f"4/4 exported: {weights}", flush=True)
    print((weights / "README.md").read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pixperfect.config import load_config
    from pixperfect.inference.pretrained import SHIPPED_MODEL_DIR

    for folder in (args.photos, args.kodak):
        if not folder.is_dir():
            sys.exit(f"photo folder {folder} does not exist (../shared/data/photos is expected)")
    # Paths relative to the repository where they can be (every command runs there), so
    # the provenance of committed weights names no machine's folders.
    out = relative(args.out.resolve())
    weights = relative((args.weights or SHIPPED_MODEL_DIR).resolve())
    photos, kodak = relative(args.photos.resolve()), relative(args.kodak.resolve())
    overrides = [
        f"data.shards={out / 'shards'}",
        f"run.root={out / 'runs'}",
        *args.overrides,
    ]
    os.chdir(ROOT)
    cfg = load_config(CONFIG, overrides)  # a wrong key is refused here, before any work
    job = Job(out, ["--config", str(CONFIG)], overrides, Ledger(out / "timing.json"))

    # Each step is resumable: rerunning the script picks up where an interruption left off.
    # 1. Shards of the training photos with the config's recipe.
    shards = build_shards(job, photos, args.crops_per_image)
    # 2. Train (or resume) the refiner.
    train, ckpt = train_refiner(job, cfg)
    # 3. Score it on Kodak beside identity and the classical baselines.
    evaluate, results = evaluate_kodak(job, kodak, ckpt)
    # 4. Export the weights with the table, timings and commands as provenance.
    commands = {"shards": shards, "train": train, "evaluate": evaluate}
    export(job, ckpt, weights, cfg.run.name, commands, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
