"""``pixperfect evaluate``: score the refiner against identity and classical baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixperfect.commands.common import add_command, add_config_args, check_device
from pixperfect.config import load_config

EXAMPLES = """\
  pixperfect evaluate --config configs/demo.yaml --ckpt runs/demo/checkpoints/last.ckpt \\
      --pretrained --out runs/demo/eval.json --save-examples 2
  pixperfect evaluate --config configs/demo.yaml --pretrained --no-perceptual \\
      --methods identity,reinhard,pretrained"""


def _evaluate(args: argparse.Namespace) -> None:
    from pixperfect.evaluation.evaluate import evaluate
    from pixperfect.evaluation.report import format_table, report_paths, write_results

    cfg = load_config(args.config, args.overrides)
    check_device(args.device)
    examples = Path(args.out).parent / "examples" if args.out else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    results = evaluate(
        cfg,
        args.ckpt or args.model,
        images=args.images,
        device=args.device,
        examples_dir=examples,
        examples_per_photo=args.save_examples,
        dataset=args.dataset,
        methods=methods,
        pooling=args.pooling,
        perceptual=not args.no_perceptual,
        inception_weights=args.inception_weights,
        cases_path=report_paths(args.out)["cases"] if args.out else None,
        cases=args.cases,
        pretrained=args.pretrained,
    )
    for message in results["skipped"].values():
        print(f"note: {message}", file=sys.stderr)
    print(format_table(results))
    if args.out:
        paths = report_paths(write_results(results, args.out))
        print(f"results: {paths['json']}")
        print(f"tables:  {paths['markdown']}, {paths['csv']}")
        if results.get("cases", {}).get("path"):
            print(f"cases:   {results['cases']['path']}")


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "evaluate",
        EXAMPLES,
        help="score the refiner against identity and classical baselines",
        description="Score methods side by side on edit triples: a --dataset folder laid "
        "out as DIR/edited/<stem>.png, DIR/mask/<stem>.png (white = edited) and "
        "DIR/target/<stem>.png (ground truth), or triples simulated with the seeded artifact "
        "recipe from held-out photos (--images DIR or the config's data.holdout).",
    )
    add_config_args(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--ckpt", help="training checkpoint; without it (or --model) the refiner is not scored"
    )
    source.add_argument("--model", help="export folder (`pixperfect export`) scored as refiner")
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="also score the shipped reference refiner (method 'pretrained')",
    )
    p.add_argument(
        "--dataset",
        metavar="DIR",
        help="folder of triples: DIR/edited/<stem>.png, DIR/mask/<stem>.png, "
        "DIR/target/<stem>.png (any image format, matching sizes)",
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="folder of held-out photos to simulate artifacts on (default: from the config)",
    )
    p.add_argument(
        "--methods",
        metavar="M1,M2",
        help="comma-separated subset of: identity, reinhard, seam_affine, poisson, laplacian, "
        "refiner, refiner_raw, refiner_pooled, pretrained (default: every available one but "
        "pretrained)",
    )
    p.add_argument(
        "--pooling",
        type=int,
        default=1,
        metavar="N",
        help="N > 1 adds refiner_pooled: test-time pooling over N jittered copies",
    )
    p.add_argument(
        "--out",
        help="results JSON, e.g. results.json: results.md, results.csv (tables) and "
        "cases.png (worst and best cases) are written beside it",
    )
    p.add_argument(
        "--cases", type=int, default=4, metavar="K", help="worst and best K cases in cases.png"
    )
    p.add_argument(
        "--no-perceptual",
        action="store_true",
        help="skip LPIPS, FID and U-IDS/P-IDS (otherwise scored when their weights are staged)",
    )
    p.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="FID Inception weights (default: weights-inception-2015-12-05-6726825d.pth in "
        "the torch hub cache)",
    )
    p.add_argument(
        "--save-examples",
        type=int,
        default=0,
        metavar="N",
        help="write the first N samples per photo as PNGs into <out dir>/examples",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)
