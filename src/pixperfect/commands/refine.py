"""``pixperfect refine`` (one file or a folder, with a trained or the shipped refiner) and
``pixperfect export`` (a deployable refiner folder from a training checkpoint)."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from pixperfect.commands.common import add_command, check_device
from pixperfect.errors import InputError, MissingFileError
from pixperfect.inference.pretrained import DEFAULT_MODEL, MODEL_ENV
from pixperfect.inference.refiner import PASTE_MODES, Refiner

REFINE_EXAMPLES = """\
  pixperfect refine --image runs/demo/examples/chelsea_0_composite.png \\
      --mask runs/demo/examples/chelsea_0_mask.png --out refined.png
  pixperfect refine --model runs/demo/release --images edits --masks masks --out refined
      (edits/photo.png is refined with masks/photo.png or masks/photo_mask.png)
  pixperfect refine --images jpegs --masks jpegs --out refined --png
      (jpegs/photo.jpg with jpegs/photo_mask.png -> refined/photo.png, lossless)"""
EXPORT_EXAMPLES = """\
  pixperfect export runs/demo/checkpoints/last.ckpt runs/demo/release
  pixperfect export --raw runs/demo/checkpoints/last.ckpt runs/demo/release-raw"""
# The refiner's options the command passes on when given; their defaults are Refiner's own.
OPTIONS = ("margin", "band", "feather", "spill", "tile_size", "tile_overlap", "pooling", "paste")
DEFAULTS = {k: inspect.signature(Refiner).parameters[k].default for k in OPTIONS}


def _check_refine_inputs(args: argparse.Namespace) -> bool:
    """Refuse a refine command line before the model loads; True for one file."""
    from pixperfect.inference.files import check_folders

    single = args.image is not None
    if single == (args.images is not None):
        raise InputError("give either --image IMG --mask MASK or --images DIR --masks DIR")
    if single and not args.mask:
        raise InputError("--image needs --mask (the edit mask, same size, white = edited)")
    if not single and not args.masks:
        raise InputError("--images needs --masks (the folder of edit masks)")
    if single and args.png:
        raise InputError("--png is for folder runs (--images); with --image, name --out *.png")
    if single:
        for name, path in (("image", args.image), ("mask", args.mask)):
            if not Path(path).is_file():
                raise MissingFileError(f"{name} {path} does not exist")
    else:
        check_folders(args.images, args.masks, args.out)
    check_device(args.device)
    return single


def _refine(args: argparse.Namespace) -> int:
    from pixperfect.imageio import is_lossy
    from pixperfect.inference import refine_file, refine_folder
    from pixperfect.inference.files import LOSSY_NOTE

    single = _check_refine_inputs(args)
    options = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
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


def add_refine_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "refine",
        REFINE_EXAMPLES,
        help="refine edited images given their edit masks (one file or a folder)",
        description="Refine one image (--image --mask --out FILE) or a folder (--images DIR "
        "--masks DIR --out DIR). In a folder, the mask of <stem>.<ext> is <stem>.<ext> or "
        "<stem>_mask.<ext> in --masks; outputs keep the image's file name. Masks: white = "
        "edited, binarised at half of full scale, same size as the image. Outputs keep the "
        "image's format; a JPEG re-encodes the whole image (quality 100, 4:4:4: a few levels "
        "everywhere), so --png (folders) or a .png --out keeps the photo exact. A folder run "
        "reports the files that failed at the end and exits 1 if any did. What changes: the "
        "edited pixels (the mask) and those within spill + band + feather px of it "
        f"({DEFAULTS['spill'] + DEFAULTS['band'] + DEFAULTS['feather']} px by default); "
        "every other pixel is the input's, byte for byte. Wider --spill, --band or "
        "--feather, or --paste crop, change pixels of the original photo outside the edit.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help="training checkpoint (Lightning .ckpt)")
    source.add_argument(
        "--model",
        help="folder written by `pixperfect export` (default: the shipped reference refiner, "
        f"{DEFAULT_MODEL}, package data, or ${MODEL_ENV})",
    )
    p.add_argument("--image", help="the editor's output (any size, grey/RGB/RGBA, 8/16 bit)")
    p.add_argument("--mask", help="edit mask of --image, same size; white = edited")
    p.add_argument("--images", help="folder of edited images")
    p.add_argument("--masks", help="folder of their masks (may be the --images folder)")
    p.add_argument("--out", required=True, help="output file (--image) or folder (--images)")
    p.add_argument(
        "--margin",
        type=int,
        help=f"context px around the mask's box (default {DEFAULTS['margin']})",
    )
    p.add_argument(
        "--band",
        type=int,
        help=f"px outside the mask pasted at full weight (default {DEFAULTS['band']})",
    )
    p.add_argument(
        "--feather",
        type=int,
        help=f"px of soft falloff after the band (default {DEFAULTS['feather']})",
    )
    p.add_argument(
        "--spill",
        type=int,
        help="px past the mask that your editor's paste reached (a feathered or grown "
        f"paste-back): refined too, at full weight, before the band (default {DEFAULTS['spill']})",
    )
    p.add_argument(
        "--tile-size", type=int, help=f"larger crops are tiled (default {DEFAULTS['tile_size']})"
    )
    p.add_argument(
        "--tile-overlap", type=int, help=f"px shared by tiles (default {DEFAULTS['tile_overlap']})"
    )
    p.add_argument(
        "--pooling",
        type=int,
        help=f"colour-jittered copies pooled (default {DEFAULTS['pooling']}; 1: off)",
    )
    p.add_argument(
        "--paste",
        choices=PASTE_MODES,
        help="paste back the band or the whole crop (changes --margin px and more around the "
        f"mask's box); default {DEFAULTS['paste']}",
    )
    p.add_argument(
        "--png",
        action="store_true",
        help="folder runs: write every output as <stem>.png (lossless) instead of in its "
        "input's format",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_refine)


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "export", EXPORT_EXAMPLES, help="write a deployable refiner folder from a checkpoint"
    )
    p.add_argument("ckpt", help="training checkpoint (Lightning .ckpt)")
    p.add_argument("out", help="folder: model.safetensors, config.yaml, provenance.json")
    p.add_argument("--raw", action="store_true", help="live generator weights instead of the EMA")
    p.set_defaults(func=_export)
