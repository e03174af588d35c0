"""Ablation of the paper's losses with the global-context refiner (docs/method.md §2-§4):
three arms with the same model, seed, steps and data, scored on the 24 Kodak photos.

    .venv/bin/python benchmarks/ablation_losses.py [--steps 1200] [--arms a,b,c]
        [--out runs/ablation] [--photos ../shared/data/photos/train]
        [--kodak ../shared/data/photos/kodak] [--warmup-frac 0.1]
        [--crops-per-image 16] [--eval-samples 8] [--set key=value ...]

A documented command, not part of CI. Shared base: ``configs/ablation_cpu.yaml`` (the FFC
refiner at CPU width: 16 channels, depth 3, 2 FFC blocks, 0.84M parameters, global receptive
field; Reinhard colour prior with its gate; edit margin 16; batch 8 of 128 px; lr 5e-4; EMA
0.995), trained on artifact shards of ``--photos`` built once with the TAEF2 codec round
trip in the data and the training mix (20% nearly-right edits, 5% untouched photos):

    pixperfect shards build --images PHOTOS --config configs/ablation_cpu.yaml
        --out OUT/shards --crops-per-image 16 --shard-size 100      (resumable)

The arms (loss weights; every other term 0):

- (a) ``a_rgb``:      RGB L1 64, the paper's RGB L1 weight (the base config; not MSE: the
  docs hold no L1-against-MSE result to argue for it, and with L1 the tone-space L1 of
  (b) is at exactly the paper's ratio);
- (b) ``b_tone``:     (a) + tone_l1 64: the tone-space L1 at the paper's relative weight
  (equal to the RGB L1), on after ``loss.tone.warmup_steps`` = ``--warmup-frac`` of the
  steps (default 10%: the paper's warm-up is 1% of a 1M-step run; here the refiner starts
  from the Reinhard prior, so a short RGB-only start suffices);
- (c) ``c_tone_gan``: (b) + adversarial 1 + tone_adversarial 1: the GAN in both spaces, one
  mask-conditioned patch discriminator, ``gan.warmup_steps`` the same fraction. The
  discriminator is the config's ``gan.base_channels: 32`` (0.46M parameters, about half
  the refiner; the paper's 64-channel one, 1.84M, is more than twice this refiner and made
  an arm-(c) step 3x an arm-(a) step instead of 1.7x).

LPIPS is off in every arm (``loss.lpips = loss.tone_lpips = 0``, and ``--no-perceptual`` in
the evaluation): its backbone weights cannot be had on this machine. This ablation
therefore tests the paper's L1 and GAN terms in both spaces, not its LPIPS terms.

Each arm: ``pixperfect train --config configs/ablation_cpu.yaml run.name=ARM ...`` (same
seed, steps and shards), then ``pixperfect evaluate --config configs/ablation_cpu.yaml
--images KODAK --ckpt .../last.ckpt --methods identity,reinhard,poisson,refiner
--no-perceptual eval.samples_per_image=8`` (the TAEF2 recipe: the config's sim with the
codec, the same seeded triples for every arm; the refiner's EMA weights). Baselines are
cheap (Poisson about 0.13 s a sample at 512 px) and are scored in every evaluation; the
table takes them from arm (a)'s and checks that identity is the same in all.

Output (printed, and in ``OUT/ablation.md`` and ``OUT/ablation.json`` with every command):
per arm band PSNR, band CIEDE2000, seam_grad, harm rate (% of samples made > 0.5 dB worse
in the band than the composite) and band_psnr_gain (mean gain over identity); the
per-bucket tables (gain and harm rate by identity band PSNR) with a row per arm; and each
arm against (a) sample by sample (mean band-PSNR difference with +-2 standard errors over
the photos, and per bucket); the gain and harm rate per artifact family (colour, texture,
codec, content, misalign: a sample counts in each family it has).

Resumable: the shards build keeps its complete shards; an arm whose ``timing.json`` exists
is not retrained (rerun to reprint; a different ``--steps`` is flagged in the notes, not
retrained: delete ``OUT/runs/ARM`` for that); an interrupted one resumes from its last
checkpoint (its wall time then covers the resumed part only, marked "resumed"); an
evaluation is reused while its command and the checkpoint are unchanged.

Budget (default ``--steps 1200``, sized for about 90 min on 2 idle cores): a step takes
about 0.8 s in arms (a) and (b) (the tone fit is cheap) and 1.3 s in (c), so 1200 steps
with the 10% warm-ups cost about 16, 16 and 26 min; the shards (315 photos x 16 crops at
about 10 samples/s) about 9 min; each evaluation (192 samples at 1.6 s: simulation with the
codec at 512 px, four methods) about 5.5 min; start-up, validation and checkpoints about
1 min an arm. Run it on idle cores, or with ``OMP_NUM_THREADS=1`` on a shared machine:
PyTorch's two threads contend with another job's and a step then takes several times as
long.

This file runs the arms; the report's tables are benchmarks/ablation_report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ablation_report import LPIPS_NOTE, format_report, summarise
from harness import ROOT, machine_line

from pixperfect import logged

if TYPE_CHECKING:
    from omegaconf import DictConfig

SHARED = ROOT.parent / "shared" / "data" / "photos"
CONFIG = ROOT / "configs" / "ablation_cpu.yaml"
PIXPERFECT = [sys.executable, "-m", "pixperfect.cli"]
RGB_L1 = 64.0  # the paper's RGB L1 weight; the tone-space L1 of (b) and (c) is the same


@dataclass(frozen=True)
class Arm:
    key: str
    run: str  # run name: OUT/runs/<run>
    label: str
    weights: dict[str, float] = field(default_factory=dict)  # loss.* over every term at 0

    @property
    def loss(self) -> dict[str, float]:
        terms = ("l1", "mse", "lpips", "adversarial")
        terms += tuple(f"tone_{t}" for t in terms)
        return {t: self.weights.get(t, 0.0) for t in terms}


ARMS = {
    "a": Arm("a", "a_rgb", "(a) RGB L1 64", {"l1": RGB_L1}),
    "b": Arm("b", "b_tone", "(b) + tone L1 64", {"l1": RGB_L1, "tone_l1": RGB_L1}),
    "c": Arm(
        "c",
        "c_tone_gan",
        "(c) + GAN, both spaces",
        {"l1": RGB_L1, "tone_l1": RGB_L1, "adversarial": 1.0, "tone_adversarial": 1.0},
    ),
}


def parse_arms(text: str) -> list[Arm]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ARMS]
    if unknown or not keys:
        raise ValueError(f"--arms: unknown {unknown or text!r}; choose from {','.join(ARMS)}")
    return [ARMS[k] for k in dict.fromkeys(keys)]


def warmup_steps(steps: int, warmup_frac: float) -> int:
    return int(steps * warmup_frac)


def data_overrides(out: Path, extra: list[str]) -> list[str]:
    """Overrides shared by the shards build, every arm and every evaluation."""
    return [f"data.shards={out / 'shards'}", *extra]


def arm_overrides(
    arm: Arm, steps: int, warmup_frac: float, out: Path, seed: int, extra: list[str] = ()
) -> list[str]:
    """key=value overrides of one arm's training; only the loss weights differ by arm."""
    warmup = warmup_steps(steps, warmup_frac)
    every = max(steps // 4, 1)
    return [
        f"run.root={out / 'runs'}",
        f"run.name={arm.run}",
        f"run.seed={seed}",
        f"trainer.max_steps={steps}",
        f"trainer.ckpt_every_n_steps={every}",
        f"trainer.image_every_n_steps={every}",
        f"trainer.val_every_n_steps={every}",  # held-out scikit-image photos, not Kodak
        "trainer.progress_bar=false",
        f"loss.tone.warmup_steps={warmup}",
        f"gan.warmup_steps={warmup}",
        "loss.lpips_missing=error",  # LPIPS is 0 in every arm: nothing to load
        *(f"loss.{k}={v:g}" for k, v in arm.loss.items()),
        *data_overrides(out, list(extra)),
    ]


def arm_config(arm: Arm, args: argparse.Namespace):
    """The validated config an arm trains with (pixperfect.config.load_config)."""
    from pixperfect.config import load_config

    overrides = arm_overrides(arm, args.steps, args.warmup_frac, args.out, args.seed, args.set)
    return load_config(CONFIG, overrides)


def run_logged(command: list[str], log: Path) -> float:
    return logged.run_logged(command, log, ROOT)


def build_shards(args: argparse.Namespace) -> dict:
    command = [
        *PIXPERFECT,
        "shards",
        "build",
        "--images",
        str(args.photos),
        "--config",
        str(CONFIG),
        "--out",
        str(args.out / "shards"),
        "--crops-per-image",
        str(args.crops_per_image),
        "--shard-size",
        "100",
        f"run.seed={args.seed}",
        *data_overrides(args.out, args.set),
    ]
    print(f"shards: building (resumable) ... (log: {args.out / 'shards.log'})", flush=True)
    seconds = run_logged(command, args.out / "shards.log")
    print(f"shards: ready in {seconds / 60:.1f} min", flush=True)
    return {"wall_s": seconds, "command": command}


def train(args: argparse.Namespace, arm: Arm) -> dict:
    directory = args.out / "runs" / arm.run
    timing = directory / "timing.json"
    if timing.is_file() and (directory / "checkpoints" / "last.ckpt").is_file():
        print(f"{arm.run}: trained already ({timing}), not retrained", flush=True)
        return json.loads(timing.read_text())
    resumed = (directory / "checkpoints").is_dir()
    overrides = arm_overrides(arm, args.steps, args.warmup_frac, args.out, args.seed, args.set)
    command = [*PIXPERFECT, "train", "--config", str(CONFIG), *overrides]
    log = args.out / f"{arm.run}.log"
    print(f"{arm.run}: training {args.steps} steps ... (log: {log})", flush=True)
    seconds = run_logged(command, log)
    result = {"steps": args.steps, "wall_s": seconds, "resumed": resumed, "command": command}
    timing.write_text(json.dumps(result, indent=2))
    print(f"{arm.run}: trained in {seconds / 60:.1f} min", flush=True)
    return result


def evaluate(args: argparse.Namespace, arm: Arm) -> dict:
    directory = args.out / f"eval_{arm.run}"
    out, stamp = directory / "results.json", directory / "command.json"
    ckpt = args.out / "runs" / arm.run / "checkpoints" / "last.ckpt"
    command = [
        *PIXPERFECT,
        "evaluate",
        "--config",
        str(CONFIG),
        "--images",
        str(args.kodak),
        "--ckpt",
        str(ckpt),
        "--out",
        str(out),
        "--methods",
        ",".join(eval_methods(args.baselines)),
        "--no-perceptual",
        f"eval.samples_per_image={args.eval_samples}",
        *data_overrides(args.out, args.set),
    ]
    if (
        out.is_file()
        and stamp.is_file()
        and json.loads(stamp.read_text()) == command
        and out.stat().st_mtime > ckpt.stat().st_mtime
    ):
        print(f"{arm.run}: evaluated already ({out}), reused", flush=True)
        return json.loads(out.read_text())
    print(f"{arm.run}: evaluating on {args.kodak} ...", flush=True)
    seconds = run_logged(command, args.out / f"{arm.run}.log")
    stamp.write_text(json.dumps(command))
    print(f"{arm.run}: evaluated in {seconds / 60:.1f} min", flush=True)
    return json.loads(out.read_text())


def eval_methods(baselines: str) -> list[str]:
    """identity, the classical ``baselines`` (comma-separated) and the refiner."""
    chosen = [b.strip() for b in baselines.split(",") if b.strip() not in ("", "identity")]
    return ["identity", *dict.fromkeys(chosen), "refiner"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="generator steps of each arm")
    parser.add_argument("--arms", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument(
        "--photos", type=Path, default=SHARED / "train", help="training photos (folder or list)"
    )
    parser.add_argument("--kodak", type=Path, default=SHARED / "kodak", help="evaluation photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--warmup-frac",
        type=float,
        default=0.1,
        help="tone and GAN warm-up as a share of --steps",
    )
    parser.add_argument("--crops-per-image", type=int, default=16, help="shard build")
    parser.add_argument(
        "--eval-samples", type=int, default=8, help="eval.samples_per_image (24 Kodak photos)"
    )
    parser.add_argument(
        "--baselines",
        default="reinhard,poisson",
        help="classical methods scored beside identity and the refiner (any of "
        "reinhard,poisson,laplacian)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the shards, every arm and every evaluation",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[Arm], DictConfig]:
    """(the arguments, paths made absolute; the arms; the first arm's config). Every arm's
    config is loaded here, so a bad argument or override fails before any work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        arms = parse_arms(args.arms)
    except ValueError as e:
        parser.error(str(e))
    if not 0 <= args.warmup_frac < 1:
        parser.error("--warmup-frac must be in [0, 1): the tone and GAN terms must switch on")
    if args.steps < 1 or args.crops_per_image < 1 or args.eval_samples < 1:
        parser.error("--steps, --crops-per-image and --eval-samples must be >= 1")
    if not args.photos.exists():
        parser.error(f"{args.photos} does not exist")
    if not args.kodak.is_dir():
        parser.error(f"{args.kodak} is not a folder")
    args.out = args.out.resolve()
    args.photos, args.kodak = args.photos.resolve(), args.kodak.resolve()
    try:  # every arm's config, before the shards build: a bad override fails here
        cfg = {arm.key: arm_config(arm, args) for arm in arms}[arms[0].key]
    except ValueError as e:
        parser.error(str(e))
    return args, arms, cfg


def training_note(args: argparse.Namespace, cfg: DictConfig) -> str:
    """What every arm trained with, for the report's notes."""
    warmup = warmup_steps(args.steps, args.warmup_frac)
    m, vae = cfg.model, cfg.sim.texture.vae
    codec = "none" if vae.kind == "none" else f"{vae.kind} {vae.variant}"
    return (
        f"Training: configs/ablation_cpu.yaml ({m.name}, {m.base_channels} ch, depth "
        f"{m.depth}, {m.ffc_blocks} FFC blocks, colour prior {m.colour_prior}), batch "
        f"{cfg.data.batch_size} of {cfg.data.crop_size} px, shards of {args.photos} "
        f"({args.crops_per_image} crops a photo, codec round trip: {codec}), "
        f"seed {args.seed}, {args.steps} steps an arm; tone and GAN warm-up {warmup} steps "
        f"({args.warmup_frac:.0%})."
        + (f" Extra overrides: {' '.join(args.set)}." if args.set else "")
    )


def write_report(
    args: argparse.Namespace, summary: dict, notes: list[str], shards: dict, trained: dict
) -> None:
    """Print the markdown report and write it and the JSON (with every command) to OUT."""
    markdown = format_report(summary, notes)
    print("\n" + markdown)
    (args.out / "ablation.md").write_text(markdown + "\n")
    report = {
        **summary,
        "shards": shards,
        "trained": trained,
        "notes": [LPIPS_NOTE, *notes],
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {args.out / 'ablation.md'}, {args.out / 'ablation.json'}")


def main(argv: list[str] | None = None) -> int:
    args, arms, cfg = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(machine_line(), flush=True)
    print(LPIPS_NOTE, flush=True)

    # 1. Artifact shards of the training photos, built once and shared by every arm.
    shards = build_shards(args)
    # 2. Train each arm: same seed, steps and shards; only the loss weights differ.
    trained = {arm.key: train(args, arm) for arm in arms}
    # 3. Score each arm on the same seeded Kodak triples.
    results = {arm.key: evaluate(args, arm) for arm in arms}
    # 4. The tables: every arm beside the baselines, and each against (a).
    summary = summarise(results, trained, arms)
    write_report(args, summary, [training_note(args, cfg)], shards, trained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
