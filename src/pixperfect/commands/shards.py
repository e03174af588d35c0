"""``pixperfect shards build`` (write or resume writing webdataset shards, from photos or
from a corpus of tar shards) and ``pixperfect shards verify`` (check them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pixperfect.commands.common import add_command, add_config_args
from pixperfect.config import load_config
from pixperfect.errors import InputError, MissingFileError
from pixperfect.shards.format import FORMATS, KINDS
from pixperfect.shards.recipe import DEVICES

BUILD_EXAMPLES = """\
  pixperfect shards build --images skimage --config configs/demo.yaml --out runs/demo/shards
  pixperfect shards build --images photos.txt --config configs/paper.yaml \\
      --out shards/paper --workers 8 --task-index 0 --num-tasks 4
  pixperfect shards build --images 'https://host/laion/{00000..09999}.tar' --kind clean \\
      --size 512 --crops-per-image 4 --format source --out shards/laion --num-tasks 16 --dry-run"""
VERIFY_EXAMPLES = """\
  pixperfect shards verify runs/demo/shards
  pixperfect shards verify --no-decode file://$PWD/runs/demo/shards/manifest.json"""


def _names_a_corpus(images: str, is_corpus) -> bool:
    """Whether ``--images`` names tar shards: a local ``.txt`` is a corpus list only when its
    first entry is a tar or pattern (else it lists photos, as before)."""
    path = Path(images)
    if path.suffix == ".txt" and path.is_file():
        with path.open() as lines:
            first = next((e for e in (line.split("#", 1)[0].strip() for line in lines) if e), "")
        return bool(first) and is_corpus(first)
    return is_corpus(images)


def _shards_spec(args: argparse.Namespace):
    """The build's recipe from the command line and config: a :class:`CorpusSpec` for a corpus
    of tar shards, else a :class:`BuildSpec` of photos."""
    from omegaconf import OmegaConf

    from pixperfect.corpus import is_corpus
    from pixperfect.shards.build import BuildSpec, resolve_device

    device = resolve_device(args.device)  # refuse cuda without CUDA before reading photos
    cfg = load_config(args.config, args.overrides)
    common = dict(
        kind=args.kind,
        size=args.size or cfg.data.crop_size,
        crops_per_image=args.crops_per_image,
        seed=cfg.run.seed if args.seed is None else args.seed,
        image_format=args.format,
        small_images=cfg.data.small_images,
        min_side=cfg.data.min_side if args.min_side is None else args.min_side,
        sim=OmegaConf.to_container(cfg.sim, resolve=True) if args.kind == "artifact" else {},
        device=device,
    )
    if _names_a_corpus(args.images, is_corpus):
        from pixperfect.corpus.build import CorpusSpec

        return CorpusSpec(corpus=args.images, dedupe=args.dedupe or cfg.data.dedupe, **common)
    if args.dedupe:
        raise InputError(
            "--dedupe skips repeated images of a corpus of tar shards (--images PATTERN); "
            "a photo folder is taken as it is"
        )
    from pixperfect.shards.sources import resolve_sources

    sources = resolve_sources(args.images, list(cfg.data.holdout))
    return BuildSpec(sources=sources, shard_size=args.shard_size, **common)


def _photo_dry_run(spec, out: str, task_index: int, num_tasks: int) -> str:
    from pixperfect.shards.build import shard_name

    spec.validate()
    mine = len(range(task_index, spec.num_shards, num_tasks))
    return "\n".join(
        [
            f"photos: {len(spec.sources)}, {spec.crops_per_image} crop(s) each",
            f"tasks: {num_tasks}; task {task_index} takes shards {task_index}, "
            f"{task_index}+{num_tasks}, ...: {mine} of them",
            f"output shards: {spec.num_shards} of {spec.shard_size} samples, as "
            f"{Path(out) / shard_name(0)} ... {shard_name(spec.num_shards - 1)}",
            f"recipe: {spec.kind} {spec.size}px, format {spec.image_format}, seed {spec.seed}, "
            f"hash {spec.recipe_hash()[:12]}",
            "dry run: nothing written",
        ]
    )


def _shards_build(args: argparse.Namespace) -> int:
    from pixperfect.shards.build import BuildSpec, build
    from pixperfect.shards.tasks import task_from_env

    spec = _shards_spec(args)
    if args.dry_run:
        task_index, num_tasks = task_from_env(args.task_index, args.num_tasks)
        if isinstance(spec, BuildSpec):
            print(_photo_dry_run(spec, args.out, task_index, num_tasks))
        else:
            from pixperfect.corpus.build import dry_run

            print(dry_run(spec, args.out, task_index, num_tasks))
        return 0
    if isinstance(spec, BuildSpec):
        run_build = build
    else:
        from pixperfect.corpus.build import build_corpus as run_build
    # A full disk or failed input shards end it with a WorkFailed: one line, exit 1 (cli.main).
    summary = run_build(spec, args.out, args.workers, args.task_index, args.num_tasks)
    seconds, samples = summary["seconds"], summary["samples"]
    rate = f"{samples / seconds:.1f} samples/s" if samples and seconds > 0 else "no samples"
    print(
        f"{args.out}: built {summary['built']} shard(s) ({samples} samples) in {seconds:.1f} s, "
        f"{rate} on {summary['device']}; kept {summary['kept']} complete one(s), "
        f"of {summary['num_shards']} in all"
    )
    if summary["manifest"]:
        print(f"manifest: {summary['manifest']}")
    else:
        print("manifest: not yet (other tasks still have shards to build)")
    return 0


def _shards_verify(args: argparse.Namespace) -> int:
    from pixperfect.shards.locations import is_pattern, is_url
    from pixperfect.shards.verify import verify

    location = str(args.out)
    if not (is_url(location) or is_pattern(location) or Path(location).exists()):
        raise MissingFileError(
            f"{location} does not exist; give a shard folder (`pixperfect shards build --out`), "
            "a manifest URL or a shard URL pattern"
        )
    report = verify(args.out, decode=not args.no_decode, workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1


def add_shards_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "shards",
        f"{BUILD_EXAMPLES}\n{VERIFY_EXAMPLES}",
        help="precompute and check webdataset shards",
    )
    shards = p.add_subparsers(dest="shards_command", required=True)
    add_shards_build_parser(shards)
    add_shards_verify_parser(shards)


def add_shards_build_parser(shards: argparse._SubParsersAction) -> None:
    p = add_command(
        shards, "build", BUILD_EXAMPLES, help="write (or resume writing) shards from photos"
    )
    add_config_args(p)
    p.add_argument(
        "--images",
        required=True,
        help="photo folder, a text file listing image paths, 'skimage' (bundled photos "
        "minus data.holdout), or an image corpus of tar shards: a brace pattern or URL "
        "(/data/c/{00000..00099}.tar, https://, pipe:, s3://) or a .txt listing tars",
    )
    p.add_argument("--out", required=True, help="output folder (shards, manifest.json)")
    p.add_argument("--kind", default="artifact", choices=KINDS)
    p.add_argument("--crops-per-image", type=int, default=8)
    p.add_argument("--size", type=int, help="crop size (default data.crop_size)")
    p.add_argument(
        "--shard-size",
        type=int,
        default=256,
        help="samples per shard (photo builds; a corpus build writes one shard per input "
        "shard and crop round)",
    )
    p.add_argument("--seed", type=int, help="default run.seed")
    p.add_argument(
        "--format",
        default="png",
        choices=FORMATS,
        help="RGB encoding: png and webp lossless; source (corpus builds): the target as the "
        "source image's own bytes and its crop box, bit-exact; avif: compact, every image at "
        "least 45 dB PSNR against the lossless crop",
    )
    p.add_argument(
        "--min-side",
        type=int,
        help="shorter side an image needs (default data.min_side, else the crop size); "
        "smaller ones are skipped, or upscaled with data.small_images=upscale",
    )
    p.add_argument(
        "--dedupe",
        action="store_true",
        help="corpus builds: skip exact duplicates within an input shard (default data.dedupe)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (input shards, tasks, output shards, estimated bytes); open no "
        "input shard, write nothing",
    )
    p.add_argument("--workers", type=int, default=1, help="processes building shards")
    p.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="where artifacts are simulated (auto: cuda if available); part of the recipe",
    )
    p.add_argument("--task-index", type=int, help="default: from SLURM_ARRAY_TASK_ID")
    p.add_argument(
        "--num-tasks",
        type=int,
        help="default: SLURM_ARRAY_TASK_COUNT or 1; given, SLURM_ARRAY_TASK_ID is the task "
        "index itself (so --array=3,7 reruns tasks 3 and 7)",
    )
    p.set_defaults(func=_shards_build)


def add_shards_verify_parser(shards: argparse._SubParsersAction) -> None:
    p = add_command(
        shards, "verify", VERIFY_EXAMPLES, help="check every shard against manifest.json"
    )
    p.add_argument(
        "out",
        help="shard folder, manifest URL (https://.../manifest.json, s3://, file://, pipe:) "
        "or shard URL pattern (https://.../shard-{000000..000009}.tar: decoded and counted, "
        "no checksums)",
    )
    p.add_argument("--no-decode", action="store_true", help="checksums only, skip decoding")
    p.add_argument(
        "--workers", type=int, default=1, help="shards checked at once (threads; default 1)"
    )
    p.set_defaults(func=_shards_verify)
