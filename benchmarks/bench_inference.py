"""Refine time and peak memory on CPU: does the cost follow the edit or the photo?

    .venv/bin/python benchmarks/bench_inference.py [--sizes 1024 2048 4096] [--fixed 256]
        [--model shipped|config|DIR]

For each photo size, two masks: a centred square covering 10% of the photo, and a fixed
``--fixed`` px square. The refiner (``--model``): ``shipped``, what ``pixperfect refine``
uses by default (``Refiner.from_pretrained()``: its colour prior included); ``config``, the
default config's model (``model:`` in pixperfect/defaults.yaml: U-Net, 24 channels, depth 3,
no prior) with *random* weights (timing and memory do not depend on the weights); or an
export folder. Refine's defaults for the rest (margin 64, band 2 + 1 px feather, tiles of
at most 1024 px with 128 px overlap, no pooling). The photo is an 8-bit RGB array, as read
from a file.

Each case runs in a fresh process, so the peaks do not mix. Memory is the process's peak
resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``): *above baseline* is the peak
minus the peak already reached after the imports, the model and one small warm-up refine
(which includes the photo and mask arrays and the output copy); *total* is the whole
process. Time is the wall time of one refine call (after the warm-up), torch's default
threads. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys

from harness import machine_line, markdown_row, markdown_table, stopwatch


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _refiner(which: str):
    import torch

    from pixperfect.config import load_config
    from pixperfect.inference import Refiner
    from pixperfect.inference.export import build_model

    if which == "config":
        torch.manual_seed(0)
        return Refiner(build_model(dict(load_config().model)))
    return Refiner.from_pretrained(None if which == "shipped" else which)


def child(size: int, mask_side: int, which: str) -> dict:
    import numpy as np
    import torch

    refiner = _refiner(which)
    calls: list[tuple[int, int]] = []

    def count(module, args):  # noqa: ARG001 - a forward pre-hook's signature
        calls.append(tuple(args[0].shape[-2:]))

    refiner.model.register_forward_pre_hook(count)
    warm = np.zeros((64, 64, 3), np.uint8)
    warm_mask = np.zeros((64, 64), np.uint8)
    warm_mask[24:40, 24:40] = 255
    refiner(warm, warm_mask)
    calls.clear()
    baseline = _peak_mb()

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    top = (size - mask_side) // 2
    mask[top : top + mask_side, top : top + mask_side] = 255
    with stopwatch() as elapsed:
        out = refiner(image, mask)
    seconds = elapsed.seconds
    assert out.shape == image.shape
    peak = _peak_mb()
    return {
        "size": size,
        "mask_side": mask_side,
        "seconds": seconds,
        "tiles": len(calls),
        "tile_shape": calls[0] if calls else None,
        "baseline_mb": baseline,
        "peak_mb": peak,
        "threads": torch.get_num_threads(),
    }


def run_case(size: int, mask_side: int, which: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(size), str(mask_side), "--model", which],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--fixed", type=int, default=256, help="side of the fixed-size mask")
    parser.add_argument(
        "--model",
        default="shipped",
        help="shipped (refine's default), config (the default config's U-Net, random "
        "weights) or an export folder",
    )
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.model)))
        return

    rows = []
    for size in args.sizes:
        for label, side in (
            ("10% area", round(size * math.sqrt(0.1))),
            (f"fixed {args.fixed}²", args.fixed),
        ):
            r = run_case(size, side, args.model)
            tiles = f"{r['tiles']} x {r['tile_shape'][0]}x{r['tile_shape'][1]}"
            above = r["peak_mb"] - r["baseline_mb"]
            rows.append(
                (f"{size}²", f"{label} ({side}²)", tiles, f"{r['seconds']:.2f}",
                 f"{above:.0f}", f"{r['peak_mb']:.0f}")
            )  # fmt: skip
            print(markdown_row(rows[-1]), file=sys.stderr, flush=True)
    which = {"shipped": "the shipped refiner", "config": "default-config U-Net (random init)"}
    print(machine_line())
    print(
        f"CPU refine, {which.get(args.model, args.model)}, margin 64, tiles <= 1024 px, "
        f"{r['threads']} torch threads; memory = peak RSS (MB)\n"
    )
    header = ["image", "mask", "network calls (tiles)", "time (s)", "peak above baseline"]
    print(markdown_table([*header, "peak total"], rows))


if __name__ == "__main__":
    main()
