"""The ``pixperfect`` command: one entry point, one subcommand per job.

pixperfect train    --config configs/demo.yaml [key=value ...]
pixperfect evaluate --config configs/demo.yaml --ckpt CKPT [--dataset DIR|--images DIR] [--out JSON]
pixperfect refine   --ckpt CKPT|--model DIR --image IMG --mask MASK --out OUT
pixperfect refine   --ckpt CKPT|--model DIR --images DIR --masks DIR --out DIR
pixperfect export   CKPT OUT [--raw]   (model.safetensors + config.yaml for --model)
pixperfect simulate --images DIR --n 16 --out sheet.png [key=value ...]
pixperfect shards build  --images DIR|LIST.txt|skimage|CORPUS --out OUT [--kind artifact|clean] ...
pixperfect shards verify OUT|MANIFEST_URL|SHARD_PATTERN [--no-decode] [--workers N]
pixperfect preflight --config configs/paper.yaml --nodes 2 --gpus-per-node 8 [key=value ...]
pixperfect config   --config configs/demo.yaml [key=value ...]   (print the resolved config)

Every command's --help ends with examples. Results go to stdout; progress bars, notes and
errors go to stderr. An error is one line, "pixperfect <command>: error: ...", and the exit
status says what failed: 0 success, 1 the work ran and failed (a check that found problems,
a folder with files that failed, a full disk), 2 the command line, config or an input is
wrong (argparse's usage errors too), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import warnings
from pathlib import Path

from pixperfect import __version__
from pixperfect.allocator import keep_freed_memory
from pixperfect.config import ConfigError, defaults_yaml, load_config, to_yaml
from pixperfect.shards.format import FORMATS


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
    from pixperfect.evaluation.evaluate import evaluate
    from pixperfect.evaluation.report import format_table, report_paths, write_results

    cfg = load_config(args.config, args.overrides)
    _check_device(args.device)
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


def _check_device(device: str) -> None:
    """Refuse a CUDA device on a machine without one, before any model is loaded."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: CUDA is not available here (torch.cuda.is_available() is "
            "False); use --device cpu, or run on a machine with a GPU"
        )


def _check_refine_inputs(args: argparse.Namespace) -> bool:
    """Refuse a refine command line before the model loads; True for one file."""
    from pixperfect.inference.files import check_folders

    single = args.image is not None
    if single == (args.images is not None):
        raise ValueError("give either --image IMG --mask MASK or --images DIR --masks DIR")
    if single and not args.mask:
        raise ValueError("--image needs --mask (the edit mask, same size, white = edited)")
    if not single and not args.masks:
        raise ValueError("--images needs --masks (the folder of edit masks)")
    if single and args.png:
        raise ValueError("--png is for folder runs (--images); with --image, name --out *.png")
    if single:
        for name, path in (("image", args.image), ("mask", args.mask)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{name} {path} does not exist")
    else:
        check_folders(args.images, args.masks, args.out)
    _check_device(args.device)
    return single


def _refine(args: argparse.Namespace) -> int:
    from pixperfect.imageio import is_lossy
    from pixperfect.inference import Refiner, refine_file, refine_folder
    from pixperfect.inference.files import LOSSY_NOTE

    single = _check_refine_inputs(args)
    names = ("margin", "band", "feather", "spill", "tile_size", "tile_overlap", "pooling", "paste")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.ckpt:
        refiner = Refiner.from_checkpoint(args.ckpt, args.device, **options)
    else:  # --model, or the shipped reference refiner when neither is given
        refiner = Refiner.from_pretrained(args.model, args.device, **options)
        if args.model is None:
            name = refiner.provenance.get("name", "the reference refiner")
            print(f"model: {name} (shipped default; --model DIR or --ckpt CKPT for another)")
    if single:
        print(f"refined: {refine_file(refiner, args.image, args.mask, args.out)}")
        if is_lossy(args.out):
            print(f"note: {args.out}: {LOSSY_NOTE}; name it *.png to keep them", file=sys.stderr)
        return 0
    report = refine_folder(refiner, args.images, args.masks, args.out, png=args.png)
    print(report.format())
    return 0 if report.ok else 1


def _export(args: argparse.Namespace) -> None:
    import json

    from pixperfect.inference.export import PROVENANCE_FILE
    from pixperfect.release import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out, raw=args.raw)
    info = json.loads((out / PROVENANCE_FILE).read_text())
    print(f"exported: {out}")
    print(f"  weights:  {info['weights']} ({info['weights_note']}), step {info['global_step']}")
    print(f"  files:    {', '.join(info['files'])}")
    print(f"  use:      pixperfect refine --model {out} --image IMG --mask MASK --out OUT")


def _simulate(args: argparse.Namespace) -> None:
    from data_sim.simulator import ArtifactSimulator
    from pixperfect.config import sim_config
    from pixperfect.data.photos import load_folder, load_photos
    from pixperfect.sheets import simulate_sheet

    cfg = load_config(args.config, args.overrides)
    photos = list((load_folder(args.images) if args.images else load_photos(cfg)[0]).values())
    if not photos:  # data.source: shards keeps the training photos inside the shards
        raise ValueError(
            f"the config names no training photos (data.source: {cfg.data.source}); give "
            "--images DIR"
        )
    simulator = ArtifactSimulator(sim_config(cfg))
    path, captions = simulate_sheet(simulator, photos, args.out, args.n, args.size, args.seed)
    print(f"contact sheet: {path}")
    for caption in captions:
        print(f"  {caption}")


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
        raise ValueError(
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
    from pixperfect.shards.build import BuildSpec, DiskFullError, build
    from pixperfect.shards.tasks import BuildIncomplete, task_from_env

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
    try:
        summary = run_build(spec, args.out, args.workers, args.task_index, args.num_tasks)
    except (DiskFullError, BuildIncomplete) as e:  # the message says what to do
        print(f"pixperfect {args.command}: error: {e}", file=sys.stderr)
        return 1
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
        raise FileNotFoundError(
            f"{location} does not exist; give a shard folder (`pixperfect shards build --out`), "
            "a manifest URL or a shard URL pattern"
        )
    report = verify(args.out, decode=not args.no_decode, workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1


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


# ---------------------------------------------------------------- parsers
# One function per subcommand: its options, help texts and handler (set_defaults(func=...)).

# The examples at the end of each command's --help, run from the repository root. The runs/demo
# paths are the ones `make demo` writes, in its order (shards, train, evaluate, export, refine).
EXAMPLES = {
    "train": """\
  pixperfect train --config configs/demo.yaml
      (its shards first: see `pixperfect shards build --help`; a rerun resumes)
  pixperfect train --config configs/demo.yaml trainer.max_steps=2000 optim.lr=2e-4""",
    "evaluate": """\
  pixperfect evaluate --config configs/demo.yaml --ckpt runs/demo/checkpoints/last.ckpt \\
      --pretrained --out runs/demo/eval.json --save-examples 2
  pixperfect evaluate --config configs/demo.yaml --pretrained --no-perceptual \\
      --methods identity,reinhard,pretrained""",
    "refine": """\
  pixperfect refine --image runs/demo/examples/chelsea_0_composite.png \\
      --mask runs/demo/examples/chelsea_0_mask.png --out refined.png
  pixperfect refine --model runs/demo/release --images edits --masks masks --out refined
      (edits/photo.png is refined with masks/photo.png or masks/photo_mask.png)
  pixperfect refine --images jpegs --masks jpegs --out refined --png
      (jpegs/photo.jpg with jpegs/photo_mask.png -> refined/photo.png, lossless)""",
    "export": """\
  pixperfect export runs/demo/checkpoints/last.ckpt runs/demo/release
  pixperfect export --raw runs/demo/checkpoints/last.ckpt runs/demo/release-raw""",
    "simulate": """\
  pixperfect simulate --n 8 --out sheet.png
  pixperfect simulate --n 4 --size 128 --out hard_edges.png sim.boundary.hard_prob=1.0""",
    "shards build": """\
  pixperfect shards build --images skimage --config configs/demo.yaml --out runs/demo/shards
  pixperfect shards build --images photos.txt --config configs/paper.yaml \\
      --out shards/paper --workers 8 --task-index 0 --num-tasks 4
  pixperfect shards build --images 'https://host/laion/{00000..09999}.tar' --kind clean \\
      --size 512 --crops-per-image 4 --format source --out shards/laion --num-tasks 16 --dry-run""",
    "shards verify": """\
  pixperfect shards verify runs/demo/shards
  pixperfect shards verify --no-decode file://$PWD/runs/demo/shards/manifest.json""",
    "preflight": """\
  pixperfect preflight --config configs/demo.yaml
  pixperfect preflight --config configs/paper.yaml --nodes 2 --gpus-per-node 8""",
    "config": """\
  pixperfect config --config configs/demo.yaml trainer.max_steps=50
  pixperfect config --defaults""",
}
EXAMPLES["shards"] = EXAMPLES["shards build"] + "\n" + EXAMPLES["shards verify"]


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as argparse does, but keeps the lines of the examples epilog."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_command(
    sub: argparse._SubParsersAction, name: str, under: str = "", **kwargs
) -> argparse.ArgumentParser:
    """The parser of ``pixperfect [under] name``, with its examples as the epilog of --help."""
    examples = EXAMPLES[f"{under} {name}".strip()]
    return sub.add_parser(
        name, epilog=f"examples:\n{examples}", formatter_class=_HelpFormatter, **kwargs
    )


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(sub, "train", help="train or resume the run named by the config")
    _add_config_args(p)
    p.set_defaults(func=_train)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "evaluate",
        help="score the refiner against identity and classical baselines",
        description="Score methods side by side on edit triples: a --dataset folder laid "
        "out as DIR/edited/<stem>.png, DIR/mask/<stem>.png (white = edited) and "
        "DIR/target/<stem>.png (ground truth), or triples simulated with the seeded artifact "
        "recipe from held-out photos (--images DIR or the config's data.holdout).",
    )
    _add_config_args(p)
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


def _add_refine_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "refine",
        help="refine edited images given their edit masks (one file or a folder)",
        description="Refine one image (--image --mask --out FILE) or a folder (--images DIR "
        "--masks DIR --out DIR). In a folder, the mask of <stem>.<ext> is <stem>.<ext> or "
        "<stem>_mask.<ext> in --masks; outputs keep the image's file name. Masks: white = "
        "edited, binarised at half of full scale, same size as the image. Outputs keep the "
        "image's format; a JPEG re-encodes the whole image (quality 100, 4:4:4: a few levels "
        "everywhere), so --png (folders) or a .png --out keeps the photo exact. A folder run "
        "reports the files that failed at the end and exits 1 if any did. What changes: the "
        "edited pixels (the mask) and those within spill + band + feather px of it (3 px by "
        "default); every other pixel is the input's, byte for byte. Wider --spill, --band or "
        "--feather, or --paste crop, change pixels of the original photo outside the edit.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help="training checkpoint (Lightning .ckpt)")
    source.add_argument(
        "--model",
        help="folder written by `pixperfect export` (default: the shipped reference refiner, "
        "weights/pixperfect-unet-cpu-v2, or $PIXPERFECT_MODEL)",
    )
    p.add_argument("--image", help="the editor's output (any size, grey/RGB/RGBA, 8/16 bit)")
    p.add_argument("--mask", help="edit mask of --image, same size; white = edited")
    p.add_argument("--images", help="folder of edited images")
    p.add_argument("--masks", help="folder of their masks (may be the --images folder)")
    p.add_argument("--out", required=True, help="output file (--image) or folder (--images)")
    p.add_argument("--margin", type=int, help="context px around the mask's box (default 64)")
    p.add_argument("--band", type=int, help="px outside the mask pasted at full weight (default 2)")
    p.add_argument("--feather", type=int, help="px of soft falloff after the band (default 1)")
    p.add_argument(
        "--spill",
        type=int,
        help="px past the mask that your editor's paste reached (a feathered or grown "
        "paste-back): refined too, at full weight, before the band (default 0)",
    )
    p.add_argument("--tile-size", type=int, help="larger crops are tiled (default 1024)")
    p.add_argument("--tile-overlap", type=int, help="px shared by tiles (default 128)")
    p.add_argument("--pooling", type=int, help="colour-jittered copies pooled (default 1: off)")
    p.add_argument(
        "--paste",
        choices=("band", "crop"),
        help="paste back the band (default) or the whole crop (changes --margin px and more "
        "around the mask's box)",
    )
    p.add_argument(
        "--png",
        action="store_true",
        help="folder runs: write every output as <stem>.png (lossless) instead of in its "
        "input's format",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_refine)


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(sub, "export", help="write a deployable refiner folder from a checkpoint")
    p.add_argument("ckpt", help="training checkpoint (Lightning .ckpt)")
    p.add_argument("out", help="folder: model.safetensors, config.yaml, provenance.json")
    p.add_argument("--raw", action="store_true", help="live generator weights instead of the EMA")
    p.set_defaults(func=_export)


def _add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(sub, "simulate", help="write a contact sheet of simulated artifacts")
    _add_config_args(p)
    p.add_argument("--images", help="folder of photos (default: the config's training photos)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--size", type=int, default=256, help="crop size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="sheet.png", help="PNG file to write")
    p.set_defaults(func=_simulate)


def _add_shards_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(sub, "shards", help="precompute and check webdataset shards")
    shards = p.add_subparsers(dest="shards_command", required=True)
    _add_shards_build_parser(shards)
    _add_shards_verify_parser(shards)


def _add_shards_build_parser(shards: argparse._SubParsersAction) -> None:
    p = _add_command(shards, "build", "shards", help="write (or resume writing) shards from photos")
    _add_config_args(p)
    p.add_argument(
        "--images",
        required=True,
        help="photo folder, a text file listing image paths, 'skimage' (bundled photos "
        "minus data.holdout), or an image corpus of tar shards: a brace pattern or URL "
        "(/data/c/{00000..00099}.tar, https://, pipe:, s3://) or a .txt listing tars",
    )
    p.add_argument("--out", required=True, help="output folder (shards, manifest.json)")
    p.add_argument("--kind", default="artifact", choices=("artifact", "clean"))
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
        choices=("auto", "cpu", "cuda"),
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


def _add_shards_verify_parser(shards: argparse._SubParsersAction) -> None:
    p = _add_command(shards, "verify", "shards", help="check every shard against manifest.json")
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


def _add_preflight_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "preflight",
        help="check everything a training launch needs, before it holds an allocation",
        description="Checks the config, the models (parameter counts), the LPIPS and codec "
        "weights, the shards (enough for nodes x gpus-per-node ranks x data.num_workers), the "
        "run directory, the disk room for checkpoints and the estimated memory per GPU. Exits "
        "1 listing every problem with its fix. slurm/train.sbatch runs it before srun.",
    )
    _add_config_args(p)
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


def _add_config_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_command(sub, "config", help="print the resolved config and exit")
    _add_config_args(p)
    p.add_argument(
        "--defaults",
        action="store_true",
        help="print configs/defaults.yaml as generated from the schema",
    )
    p.set_defaults(func=_config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixperfect",
        description=__doc__,
        epilog="`pixperfect COMMAND --help` gives a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pixperfect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_refine_parser(sub)
    _add_export_parser(sub)
    _add_simulate_parser(sub)
    _add_shards_parser(sub)
    _add_preflight_parser(sub)
    _add_config_parser(sub)
    return parser


def _log_to_stderr() -> None:
    """The project's log records on stderr; one handler however often main() runs (tests),
    writing to the stderr of this run."""
    project_log = logging.getLogger("pixperfect")
    for old in [h for h in project_log.handlers if getattr(h, "pixperfect_cli", False)]:
        project_log.removeHandler(old)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.pixperfect_cli = True
    project_log.addHandler(handler)
    project_log.setLevel(logging.INFO)


def _error(args: argparse.Namespace, message: object, code: int) -> int:
    """One line on stderr, ``pixperfect <command>: error: <message>``; returns ``code``."""
    text = str(message) or type(message).__name__
    print(f"pixperfect {args.command}: error: {text}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (module docstring). Expected errors are one
    line on stderr, without a traceback; anything else is a bug and keeps its traceback."""
    _log_to_stderr()
    # Lightning's advice about dataloader workers on a 2-core laptop is noise in the demo.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # The module reads the shards' bookkeeping before the transfer (RefinerModule.
    # on_before_batch_transfer), the data modules define no such hook: nothing is overridden.
    warnings.filterwarnings("ignore", ".*overridden `on_before_batch_transfer`.*")
    # Checkpoints after the step are what we want: a resume continues from that state.
    warnings.filterwarnings("ignore", ".*no pre-optimization state was saved.*")
    args = build_parser().parse_args(argv)
    # The command owns its process: reuse freed CPU memory instead of page-faulting afresh
    # (see pixperfect.allocator; 12-15% of a CPU training step).
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # the command line or an input
        return _error(args, e, 2)
    except pickle.UnpicklingError as e:  # torch.load of a file that is no checkpoint
        return _error(args, f"not a readable checkpoint ({e}); give a `pixperfect train` .ckpt", 2)
    except OSError as e:  # the work failed on the system: permissions, a full disk, network
        return _error(args, e, 1)
    except KeyboardInterrupt:
        print(f"pixperfect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
