"""Learnability probes: can the refiner learn one artifact family at a time, and beat the
best classical fix for it on held-out photos?

    .venv/bin/python benchmarks/learnability.py [--families texture,colour,misalign]
        [--arms NAME ...] [--steps 800] [--out runs/learnability]

For every family and arm: ``pixperfect train`` of configs/demo.yaml on scikit-image's
photos with artifacts of that family only (simulated in the step), then ``pixperfect
evaluate`` on the two held-out photos (32 draws each, the same family) against identity and
every classical fix. Prints one row per (family, arm): identity's band PSNR, the best
classical fix, the refiner, its gain over identity, over the best fix, its harm rate, the
texture gap it closes and its validation band PSNR over training (the curve's first and
last points, and the best). Each run and evaluation is kept and reused (rerun = resume).

The families (``FAMILIES``): ``texture`` with the TAEF2 round trip (staged at
../shared/weights/taesd: docs/method.md §7), ``colour`` (docs/method.md §5.1's smooth field),
``misalign``. The arms (``ARMS``) are override sets of the training recipe; ``unet`` is the
demo's, the others change one or more levers (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from harness import ROOT, machine_line, markdown_table

sys.path.insert(0, str(ROOT / "scripts"))

from training_curves import read_scalars  # noqa: E402

from pixperfect.logged import run_logged  # noqa: E402

CODEC = "sim.texture.vae.kind=taesd sim.texture.vae.path=../shared/weights/taesd"
ONLY = "sim.colour.p={c} sim.texture.p={t} sim.content.p=0 sim.misalign.p={m}"
FAMILIES = {
    "texture": f"{ONLY.format(c=0, t=1, m=0)} {CODEC}",
    "texture-nocodec": ONLY.format(c=0, t=1, m=0),
    "colour": ONLY.format(c=1, t=0, m=0),
    "misalign": ONLY.format(c=0, t=0, m=1),
}
COMMON = "data.source=skimage trainer.progress_bar=false model.colour_prior=none"
COSINE = "optim.schedule=cosine optim.warmup_steps=50"
ARMS = {
    "unet": "",  # the demo recipe: plain U-Net, MSE x 1, constant learning rate
    "unet-cosine": COSINE,
    "unet-psnr": f"{COSINE} loss.mse=0 loss.psnr=1 loss.psnr_floor_db=80",
    "resunet-l1": f"model.name=resunet {COSINE} loss.mse=0 loss.l1=64",
    "resunet-psnr": f"model.name=resunet {COSINE} loss.mse=0 loss.psnr=1 loss.psnr_floor_db=80",
    "resunet-psnr50": f"model.name=resunet {COSINE} loss.mse=0 loss.psnr=1 loss.psnr_floor_db=50",
}
METHODS = "identity,reinhard,seam_affine,poisson,laplacian,refiner"
BASELINES = ("reinhard", "seam_affine", "poisson", "laplacian")


def train(family: str, arm: str, args: argparse.Namespace) -> Path:
    run = args.out / "runs" / f"{family}__{arm}"
    if (run / "checkpoints" / "last.ckpt").is_file() and (run / "done").is_file():
        return run
    overrides = [*shlex.split(FAMILIES[family]), *shlex.split(COMMON), *shlex.split(ARMS[arm])]
    command = [sys.executable, "-m", "pixperfect.cli", "train", "--config", "configs/demo.yaml",
               *overrides, f"trainer.max_steps={args.steps}", f"run.root={args.out / 'runs'}",
               f"run.name={family}__{arm}", f"trainer.val_every_n_steps={args.steps // 4}",
               f"trainer.ckpt_every_n_steps={args.steps // 4}"]  # fmt: skip
    print(f"{family}/{arm}: {shlex.join(command[2:])}", flush=True)
    run_logged(command, args.out / "logs" / f"{family}__{arm}.train.log", ROOT)
    (run / "done").touch()
    return run


def evaluate(family: str, arm: str, run: Path, args: argparse.Namespace) -> dict:
    out = args.out / "eval" / f"{family}__{arm}.json"
    if not out.is_file():
        command = [sys.executable, "-m", "pixperfect.cli", "evaluate", "--config",
                   "configs/demo.yaml", *shlex.split(FAMILIES[family]), "--ckpt",
                   str(run / "checkpoints" / "last.ckpt"), "--methods", METHODS,
                   "--no-perceptual", "--cases", "0", "--out", str(out)]  # fmt: skip
        run_logged(command, args.out / "logs" / f"{family}__{arm}.eval.log", ROOT)
    return json.loads(out.read_text())


def row(family: str, arm: str, results: dict, run: Path) -> dict:
    metrics = results["methods"]
    best = max(BASELINES, key=lambda m: metrics[m]["band_psnr"])
    refiner = metrics["refiner"]
    curve = [v for _, v in read_scalars(run).get("val/band_psnr", [])]
    return {
        "family": family,
        "arm": arm,
        "identity": metrics["identity"]["band_psnr"],
        "best": best,
        "best_psnr": metrics[best]["band_psnr"],
        "refiner": refiner["band_psnr"],
        "gain": refiner.get("band_psnr_gain"),
        "over_best": refiner["band_psnr"] - metrics[best]["band_psnr"],
        "harm": refiner.get("harm_rate"),
        "gap_closed": refiner.get("texture_gap_closed"),
        "curve": curve,
    }


def _num(value: float | None, fmt: str = "+.2f") -> str:
    return "-" if value is None else format(value, fmt)


def format_rows(rows: list[dict]) -> str:
    header = ["family", "arm", "identity dB", "best fix dB", "refiner dB", "gain", "over best fix",
              "harm %", "texture gap closed %", "val band PSNR first / last / best"]  # fmt: skip
    cells = []
    for r in rows:
        curve = r["curve"]
        val = f"{curve[0]:.2f} / {curve[-1]:.2f} / {max(curve):.2f}" if curve else "-"
        cells.append((
            r["family"], r["arm"], f"{r['identity']:.2f}", f"{r['best_psnr']:.2f} ({r['best']})",
            f"{r['refiner']:.2f}", _num(r["gain"]), _num(r["over_best"]), _num(r["harm"], ".1f"),
            _num(r["gap_closed"], "+.0f"), val,
        ))  # fmt: skip
    return markdown_table(header, cells, align="llrrrrrrrl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="texture,colour,misalign")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--out", type=Path, default=Path("runs/learnability"))
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    rows = []
    for family in args.families.split(","):
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; available: {', '.join(FAMILIES)}")
        for arm in args.arms:
            run = train(family, arm, args)
            rows.append(row(family, arm, evaluate(family, arm, run, args), run))
    table = format_rows(rows)
    (args.out / "learnability.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
