"""The commands that run from the config: ``train``, ``simulate``, ``preflight`` and
``config`` (print the resolved config)."""

from __future__ import annotations

import argparse

from pixperfect.commands.common import add_command, add_config_args
from pixperfect.config import defaults_yaml, load_config, to_yaml
from pixperfect.errors import InputError

TRAIN_EXAMPLES = """\
  pixperfect train --config configs/demo.yaml
      (its shards first: see `pixperfect shards build --help`; a rerun resumes)
  pixperfect train --config configs/demo.yaml trainer.max_steps=2000 optim.lr=2e-4"""
SIMULATE_EXAMPLES = """\
  pixperfect simulate --n 8 --out sheet.png
  pixperfect simulate --n 4 --size 128 --out hard_edges.png sim.boundary.hard_prob=1.0"""
PREFLIGHT_EXAMPLES = """\
  pixperfect preflight --config configs/demo.yaml
  pixperfect preflight --config configs/paper.yaml --nodes 2 --gpus-per-node 8"""
CONFIG_EXAMPLES = """\
  pixperfect config --config configs/demo.yaml trainer.max_steps=50
  pixperfect config --defaults"""


def _train(args: argparse.Namespace) -> None:
    from pixperfect.training.train import train

    cfg = load_config(args.config, args.overrides)
    directory = train(cfg)
    print(f"run directory: {directory}")
    print(f"  checkpoint:  {directory / 'checkpoints' / 'last.ckpt'}")
    print(f"  config:      {directory / 'config.yaml'}")
    print(f"  tensorboard: tensorboard --logdir {directory / 'tb'}")


def _simulate(args: argparse.Namespace) -> None:
    from data_sim.simulator import ArtifactSimulator
    from pixperfect.config import sim_config
    from pixperfect.data.photos import load_folder, load_photos
    from pixperfect.sheets import simulate_sheet

    cfg = load_config(args.config, args.overrides)
    photos = list((load_folder(args.images) if args.images else load_photos(cfg)[0]).values())
    if not photos:  # data.source: shards keeps the training photos inside the shards
        raise InputError(
            f"the config names no training photos (data.source: {cfg.data.source}); give "
            "--images DIR"
        )
    simulator = ArtifactSimulator(sim_config(cfg))
    path, captions = simulate_sheet(simulator, photos, args.out, args.n, args.size, args.seed)
    print(f"contact sheet: {path}")
    for caption in captions:
        print(f"  {caption}")


def _preflight(args: argparse.Namespace) -> int:
    from pixperfect.preflight import preflight

    report = preflight(
        args.config, args.overrides, args.nodes, args.gpus_per_node, args.gpu_memory_gib
    )
    print(report.format())
    return 0 if report.passed else 1


def _config(args: argparse.Namespace) -> None:
    if args.defaults:
        print(defaults_yaml(), end="")
        return
    print(to_yaml(load_config(args.config, args.overrides)), end="")


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train", TRAIN_EXAMPLES, help="train or resume the run named by the config"
    )
    add_config_args(p)
    p.set_defaults(func=_train)


def add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "simulate", SIMULATE_EXAMPLES, help="write a contact sheet of simulated artifacts"
    )
    add_config_args(p)
    p.add_argument("--images", help="folder of photos (default: the config's training photos)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--size", type=int, default=256, help="crop size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="sheet.png", help="PNG file to write")
    p.set_defaults(func=_simulate)


def add_preflight_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "preflight",
        PREFLIGHT_EXAMPLES,
        help="check everything a training launch needs, before it holds an allocation",
        description="Checks the config, the models (parameter counts), the LPIPS and codec "
        "weights, the shards (enough for nodes x gpus-per-node ranks x data.num_workers), the "
        "run directory, the disk room for checkpoints and the estimated memory per GPU. Exits "
        "1 listing every problem with its fix. slurm/train.sbatch runs it before srun.",
    )
    add_config_args(p)
    p.add_argument("--nodes", type=int, default=1, help="nodes of the launch (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=1,
        help="ranks per node: GPUs per node (on CPU: tasks per node); default 1",
    )
    p.add_argument(
        "--gpu-memory-gib",
        type=float,
        help="memory of one GPU (default: the visible GPU's, else 80)",
    )
    p.set_defaults(func=_preflight)


def add_config_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "config", CONFIG_EXAMPLES, help="print the resolved config and exit")
    add_config_args(p)
    p.add_argument(
        "--defaults",
        action="store_true",
        help="print the defaults layer (pixperfect/defaults.yaml) as generated from the schema",
    )
    p.set_defaults(func=_config)
