"""The ``pixperfect`` command: one entry point, one subcommand per job.

pixperfect train    --config configs/demo.yaml [key=value ...]
pixperfect evaluate --config configs/demo.yaml --ckpt CKPT [--images DIR] [--out JSON]
pixperfect refine   --ckpt CKPT --image IMG --mask MASK --out OUT
pixperfect config   --config configs/demo.yaml [key=value ...]   (print the resolved config)
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from pixperfect.config import ConfigError, defaults_yaml, load_config, to_yaml


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML file (merged over configs/defaults)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. trainer.max_steps=100",
    )


def _train(args: argparse.Namespace) -> None:
    from pixperfect.training.train import train

    cfg = load_config(args.config, args.overrides)
    directory = train(cfg)
    print(f"run directory: {directory}")
    print(f"  checkpoint:  {directory / 'checkpoints' / 'last.ckpt'}")
    print(f"  config:      {directory / 'config.yaml'}")
    print(f"  tensorboard: tensorboard --logdir {directory / 'tb'}")


def _evaluate(args: argparse.Namespace) -> None:
    from pixperfect.evaluation.evaluate import evaluate, format_table, write_results

    cfg = load_config(args.config, args.overrides)
    examples = Path(args.out).parent / "examples" if args.out else None
    results = evaluate(
        cfg,
        args.ckpt,
        images=args.images,
        device=args.device,
        examples_dir=examples,
        examples_per_photo=args.save_examples,
    )
    print(format_table(results))
    if args.out:
        print(f"results: {write_results(results, args.out)}")


def _refine(args: argparse.Namespace) -> None:
    from pixperfect.inference import Refiner, refine_file

    refiner = Refiner.from_checkpoint(args.ckpt, args.device)
    print(f"refined: {refine_file(refiner, args.image, args.mask, args.out)}")


def _simulate(args: argparse.Namespace) -> None:
    from data_sim.simulator import ArtifactSimulator
    from pixperfect.config import sim_config
    from pixperfect.data.datamodule import load_photos
    from pixperfect.data.photos import load_folder
    from pixperfect.sheets import simulate_sheet

    cfg = load_config(args.config, args.overrides)
    photos = list((load_folder(args.images) if args.images else load_photos(cfg)[0]).values())
    simulator = ArtifactSimulator(sim_config(cfg))
    path, captions = simulate_sheet(simulator, photos, args.out, args.n, args.size, args.seed)
    print(f"contact sheet: {path}")
    for caption in captions:
        print(f"  {caption}")


def _config(args: argparse.Namespace) -> None:
    if args.defaults:
        print(defaults_yaml(), end="")
        return
    print(to_yaml(load_config(args.config, args.overrides)), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixperfect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train or resume the run named by the config")
    _add_config_args(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score identity and a refiner on held-out photos")
    _add_config_args(p)
    p.add_argument("--ckpt", help="training checkpoint; without it only identity is scored")
    p.add_argument("--images", help="folder of held-out photos (default: from the config)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument(
        "--save-examples",
        type=int,
        default=0,
        metavar="N",
        help="write the first N samples per photo as PNGs into <out dir>/examples",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("refine", help="refine one edited image given its edit mask")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--image", required=True, help="the editor's output (any size, 8/16 bit)")
    p.add_argument("--mask", required=True, help="edit mask, same size; white = edited")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_refine)

    p = sub.add_parser("simulate", help="write a contact sheet of simulated artifacts")
    _add_config_args(p)
    p.add_argument("--images", help="folder of photos (default: the config's training photos)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--size", type=int, default=256, help="crop size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="sheet.png", help="PNG file to write")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("config", help="print the resolved config and exit")
    _add_config_args(p)
    p.add_argument(
        "--defaults",
        action="store_true",
        help="print configs/defaults.yaml as generated from the schema",
    )
    p.set_defaults(func=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    project_log = logging.getLogger("pixperfect")
    project_log.addHandler(handler)
    project_log.setLevel(logging.INFO)
    # Lightning's advice about dataloader workers on a 2-core laptop is noise in the demo.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"pixperfect {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
