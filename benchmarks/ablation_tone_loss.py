"""Ablation of the discriminative tone-mapping loss (METHOD section 3): two training runs with
the same budget, RGB losses only against the same RGB losses plus the tone-space L1, both
scored on the Kodak photos. A documented command, not part of CI: about 35 min on 2 free CPU
cores (2 x 2000 steps at about 0.3 s, 2 evaluations of 96 Kodak samples), longer on shared ones.

    .venv/bin/python benchmarks/ablation_tone_loss.py [--steps 2000] [--out runs/ablation_tone]
        [--photos ../shared/data/photos/train] [--kodak ../shared/data/photos/kodak]

Both runs: ``pixperfect train --config configs/demo.yaml`` (its small U-Net, batch, crop,
optimiser and EMA) on random crops of ``--photos`` (data.source=folder, artifacts simulated
on the fly with the full default recipe), same seed and steps; then
``pixperfect evaluate --images KODAK --ckpt ... --out JSON`` on the same seeded artifacts
(identity and the refiner's EMA weights only, no perceptual scores, where evaluate offers
``--methods`` / ``--no-perceptual``). Same seed: both runs see the same crops and artifacts.

1. ``rgb``:  the RGB terms (default: the demo's MSE 1; ``--l1``, ``--mse``), tone_* all 0;
2. ``tone``: the same RGB terms + tone_l1 (``--tone-l1``), switched on after a warm-up of
   ``--warmup-frac`` of the steps (loss.tone.warmup_steps).

Default ``--tone-l1 0.25``: the paper weighs L1 64 in both spaces; on demo batches at
initialisation the gradient of MSE 1 is about 0.24 times that of L1 1, so tone_l1 0.25 next
to MSE 1 keeps the paper's balance between the two spaces at the start of training.
LPIPS and the adversarial terms are off in both runs (no LPIPS weights on the CPU machine;
the GAN about doubles a step); ``--lpips W`` / ``--adversarial W`` turn them on in both
spaces of both runs (RGB term in both, tone term in run 2 only).

Prints a markdown table (run, steps, wall time, PSNR, band PSNR, band L1 and band CIEDE2000
when the evaluation writes it) and writes it, with every command, to ``OUT/ablation.md`` and
``OUT/ablation.json``. A run whose ``timing.json`` exists is not retrained (rerun to reprint);
an interrupted one resumes from its last checkpoint (its wall time then covers the resumed
part only, marked "resumed").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "photos"
CONFIG = ROOT / "configs" / "demo.yaml"
PIXPERFECT = [sys.executable, "-m", "pixperfect.cli"]
# Columns: (JSON key, header, format); band_ciede2000 only when the evaluation writes it.
METRICS = (
    ("psnr", "PSNR dB", "{:.2f}"),
    ("band_psnr", "band PSNR dB", "{:.2f}"),
    ("band_l1", "band L1", "{:.4f}"),
    ("band_ciede2000", "band CIEDE2000", "{:.3f}"),
)


def run_logged(command: list[str], log: Path) -> float:
    """Run ``command`` with its output appended to ``log``; wall seconds. Exits on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        start = time.perf_counter()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        sys.exit(f"command failed ({code}): {shlex.join(command)}\n--- {log} (tail) ---\n{tail}")
    return seconds


def run_overrides(args: argparse.Namespace, tone: bool) -> list[str]:
    """key=value overrides of one run; everything but the tone_* weights is shared."""
    warmup = int(args.steps * args.warmup_frac)
    weights = {
        "l1": args.l1,
        "mse": args.mse,
        "lpips": args.lpips,
        "adversarial": args.adversarial,
        "tone_l1": args.tone_l1 if tone else 0.0,
        "tone_mse": 0.0,
        "tone_lpips": args.lpips if tone else 0.0,
        "tone_adversarial": args.adversarial if tone else 0.0,
    }
    every = max(args.steps // 4, 1)
    return [
        f"run.root={args.out / 'runs'}",
        f"run.name={'tone' if tone else 'rgb'}",
        f"run.seed={args.seed}",
        "data.source=folder",
        f"data.images={args.photos}",
        f"data.batch_size={args.batch}",
        f"trainer.max_steps={args.steps}",
        f"trainer.ckpt_every_n_steps={every}",
        f"trainer.image_every_n_steps={every}",
        f"trainer.val_every_n_steps={args.steps + 1}",  # no validation set: Kodak is the test
        "trainer.progress_bar=false",
        f"loss.tone.warmup_steps={warmup}",
        "gan.warmup_steps=0",
        "loss.lpips_missing=error",
        *(f"loss.{k}={v:g}" for k, v in weights.items()),
    ]


def train(args: argparse.Namespace, name: str, tone: bool) -> dict:
    directory = args.out / "runs" / name
    timing = directory / "timing.json"
    if timing.is_file() and (directory / "checkpoints" / "last.ckpt").is_file():
        print(f"{name}: trained already ({timing}), not retrained", flush=True)
        return json.loads(timing.read_text())
    resumed = (directory / "checkpoints").is_dir()
    command = [*PIXPERFECT, "train", "--config", str(CONFIG), *run_overrides(args, tone)]
    print(f"{name}: training {args.steps} steps ... (log: {args.out / f'{name}.log'})", flush=True)
    seconds = run_logged(command, args.out / f"{name}.log")
    result = {"steps": args.steps, "wall_s": seconds, "resumed": resumed, "command": command}
    timing.write_text(json.dumps(result, indent=2))
    print(f"{name}: trained in {seconds / 60:.1f} min", flush=True)
    return result


def evaluate_options() -> list[str]:
    """Only identity and the refiner, without perceptual scores, where ``pixperfect
    evaluate`` can be told so (the classical baselines cost most of an evaluation)."""
    usage = subprocess.run(
        [*PIXPERFECT, "evaluate", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    options = ["--methods", "identity,refiner"] if "--methods" in usage else []
    return options + (["--no-perceptual"] if "--no-perceptual" in usage else [])


def evaluate(args: argparse.Namespace, name: str) -> dict:
    out = args.out / f"eval_{name}.json"
    command = [
        *PIXPERFECT,
        "evaluate",
        "--config",
        str(CONFIG),
        "--images",
        str(args.kodak),
        "--ckpt",
        str(args.out / "runs" / name / "checkpoints" / "last.ckpt"),
        "--out",
        str(out),
        *evaluate_options(),
        f"eval.samples_per_image={args.eval_samples}",
    ]
    print(f"{name}: evaluating on {args.kodak} ...", flush=True)
    seconds = run_logged(command, args.out / f"{name}.log")
    print(f"{name}: evaluated in {seconds / 60:.1f} min", flush=True)
    return json.loads(out.read_text())


def table(rows: list[dict], metrics: list[tuple[str, str, str]]) -> str:
    header = "| run | steps | wall time | " + " | ".join(h for _, h, _ in metrics) + " |"
    lines = [header, "|---|---:|---:|" + "---:|" * len(metrics)]
    for row in rows:
        cells = [
            fmt.format(row["scores"][k]) if k in row["scores"] else "n/a" for k, _, fmt in metrics
        ]
        lines.append(
            f"| {row['run']} | {row['steps']} | {row['wall']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="generator steps of each run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation_tone")
    parser.add_argument("--photos", type=Path, default=SHARED / "train", help="training photos")
    parser.add_argument("--kodak", type=Path, default=SHARED / "kodak", help="evaluation photos")
    parser.add_argument("--batch", type=int, default=8, help="data.batch_size (demo: 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l1", type=float, default=0.0, help="RGB L1 weight (both runs)")
    parser.add_argument("--mse", type=float, default=1.0, help="RGB MSE weight (both runs)")
    parser.add_argument("--tone-l1", type=float, default=0.25, help="tone_l1 weight (run 2)")
    parser.add_argument("--lpips", type=float, default=0.0, help="LPIPS weight (needs weights)")
    parser.add_argument("--adversarial", type=float, default=0.0, help="adversarial weight")
    parser.add_argument(
        "--warmup-frac", type=float, default=0.2, help="tone warm-up as a share of --steps"
    )
    parser.add_argument(
        "--eval-samples", type=int, default=4, help="eval.samples_per_image (24 Kodak photos)"
    )
    args = parser.parse_args()
    if not 0 <= args.warmup_frac < 1:
        parser.error("--warmup-frac must be in [0, 1): the tone loss must switch on")
    if args.tone_l1 <= 0:
        parser.error("--tone-l1 must be > 0: it is what run 2 adds")
    for folder in (args.photos, args.kodak):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    args.out = args.out.resolve()
    args.photos, args.kodak = args.photos.resolve(), args.kodak.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    runs = [("rgb", False, "RGB only"), ("tone", True, f"RGB + tone_l1 {args.tone_l1:g}")]
    trained = {name: train(args, name, tone) for name, tone, _ in runs}
    results = {name: evaluate(args, name) for name, _, _ in runs}

    identity = results["rgb"]["methods"]["identity"]
    same = identity == results["tone"]["methods"]["identity"]
    rows = [{"run": "identity (no refiner)", "steps": 0, "wall": "-", "scores": identity}]
    for name, _, label in runs:
        t = trained[name]
        wall = f"{t['wall_s'] / 60:.1f} min" + (" (resumed)" if t["resumed"] else "")
        rows.append(
            {
                "run": label,
                "steps": t["steps"],
                "wall": wall,
                "scores": results[name]["methods"]["refiner"],
            }
        )
    present = [m for m in METRICS if all(m[0] in r["scores"] for r in rows)]
    e = results["rgb"]
    rgb_terms = ", ".join(
        f"{k} {getattr(args, k):g}"
        for k in ("l1", "mse", "lpips", "adversarial")
        if getattr(args, k)
    )
    notes = [
        f"Training: configs/demo.yaml on {args.photos} (folder, on-the-fly artifacts), batch "
        f"{args.batch}, seed {args.seed}, {args.steps} steps; RGB terms: {rgb_terms}; tone "
        f"warm-up {int(args.steps * args.warmup_frac)} steps.",
        f"Evaluation: {e['samples']} samples from {e['photos']} photos in {args.kodak}, seed "
        f"{e['seed']}, band {e['band_width']} px (EMA weights). Identity "
        + ("is the same in both evaluations." if same else "DIFFERS between the evaluations!"),
    ]
    markdown = table(rows, present) + "\n\n" + "\n".join(notes)
    print("\n" + markdown)
    (args.out / "ablation.md").write_text(markdown + "\n")
    summary = {"rows": rows, "trained": trained, "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "ablation.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwritten: {args.out / 'ablation.md'}, {args.out / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
