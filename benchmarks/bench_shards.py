"""Shard throughput and size: build with 1 and 2 workers, read shards vs a folder of PNGs.

    .venv/bin/python benchmarks/bench_shards.py [--photos DIR] [--n-photos 68] [--size 256]

Prints three tables:
1. build throughput (samples/s) of artifact and clean shards with 1 and 2 worker processes;
2. read throughput of the training data module's stream (shards) against a map-style
   dataset decoding the same samples from loose PNG files, with 0 and 2 loader workers;
3. encoded bytes per sample for each RGB format (PNG, lossless WebP) and member.

Photos default to ../shared/data/photos/train/cbsd68 (real photos, 481x321).
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
from harness import ROOT, Columns, machine_line, read_rate, repeat, stopwatch, use_command_allocator
from torch.utils.data import DataLoader, Dataset

from pixperfect.shards.build import BuildSpec, build
from pixperfect.shards.format import decode_sample, to_float
from pixperfect.shards.reader import training_stream

DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "train" / "cbsd68"


def time_build(spec: BuildSpec, out: Path, workers: int) -> float:
    with stopwatch() as elapsed:
        summary = build(spec, out, workers=workers, progress=False)
    return summary["samples"] / elapsed.seconds


class PngFolder(Dataset):
    """The baseline a user might write: one PNG file per image, decoded per sample."""

    def __init__(self, folder: Path) -> None:
        self.keys = sorted({p.name.split(".")[0] for p in folder.glob("*.png")})
        self.folder = folder

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        record = {"__key__": self.keys[i]}
        for name in ("target", "composite", "mask", "alpha"):
            record[f"{name}.png"] = (self.folder / f"{self.keys[i]}.{name}.png").read_bytes()
        out = decode_sample(record, "artifact")
        out.pop("__key__", None)
        return out


def explode(shards: Path, folder: Path) -> int:
    """Write every image member of the shards as a loose PNG file."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for tar_path in sorted(shards.glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    (folder / m.name).write_bytes(tar.extractfile(m).read())
                    n += m.name.endswith(".target.png")
    return n


def member_sizes(shards: Path) -> dict[str, float]:
    totals: dict[str, list[int]] = {}
    for tar_path in sorted(shards.glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                totals.setdefault(m.name.split(".", 1)[1], []).append(m.size)
    return {k: sum(v) / len(v) for k, v in totals.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--n-photos", type=int, default=68)
    parser.add_argument("--crops-per-image", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--read-batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    allocator = use_command_allocator()
    photos = sorted(p for p in Path(args.photos).glob("*") if p.suffix in {".png", ".jpg"})
    if not photos:
        print(f"no photos under {args.photos} (give --photos DIR)", file=sys.stderr)
        return 2
    sources = [str(p) for p in photos[: args.n_photos]]
    spec = dict(sources=sources, size=args.size, crops_per_image=args.crops_per_image)
    spec["shard_size"] = max(1, len(sources) * args.crops_per_image // 16)  # 16 shards
    n = len(sources) * args.crops_per_image
    print(machine_line())
    print(f"cv2 {cv2.__version__}, allocator: {allocator}")
    print(f"{n} samples of {args.size}px from {len(sources)} photos in {args.photos}\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = Columns(("build", "<28"), ("workers", ">8"), ("samples/s", ">11.1f"))
        print(table.header())
        for kind in ("artifact", "clean"):
            for workers in (1, 2):
                rate = time_build(BuildSpec(kind=kind, **spec), tmp / f"{kind}{workers}", workers)
                print(table.row(f"{kind} shards", workers, rate))

        shards = tmp / "artifact1"
        explode(shards, tmp / "pngs")
        table = Columns((f"read (batch {args.batch})", "<28"), *table.columns[1:])
        print("\n" + table.header())
        for workers in (0, 1, 2):
            # Alternate the two readers and keep each one's best of --repeats: this machine's
            # timing noise (~15%) is larger than the difference being measured.
            rates: dict[str, list[float]] = {"shards": [], "png": []}
            for _ in range(args.repeats):
                stream = training_stream(
                    shards, args.batch, workers=workers, epoch_samples=10**6, shuffle_buffer=64
                )
                loader = DataLoader(stream, batch_size=None, num_workers=workers)
                # float batches: converted here, in the main process, as the training step
                # does (there on the device)
                rates["shards"].append(
                    read_rate(loader, args.read_batches, args.batch, each=to_float)
                )
                folder = DataLoader(
                    PngFolder(tmp / "pngs"),
                    batch_size=args.batch,
                    shuffle=True,
                    num_workers=workers,
                    drop_last=True,
                )
                loops = -(-args.read_batches * args.batch // len(folder.dataset))
                rates["png"].append(
                    read_rate(repeat(folder, loops + 1), args.read_batches, args.batch)
                )
            print(table.row("shards (data module stream)", workers, max(rates["shards"])))
            print(table.row("loose PNG files", workers, max(rates["png"])))

        webp = tmp / "webp"
        build(BuildSpec(image_format="webp", **spec), webp, progress=False)
        table = Columns(
            ("bytes per sample", "<18"), ("target", ">9.0f"), ("composite", ">11.0f"),
            ("mask", ">8.0f"), ("alpha", ">8.0f"), ("params", ">8.0f"), ("total", ">9.0f"),
        )  # fmt: skip
        print("\n" + table.header())
        for name, ext, folder in (("png", "png", shards), ("webp lossless", "webp", webp)):
            s = member_sizes(folder)
            manifest = json.loads((folder / "manifest.json").read_text())
            per = sum(e["bytes"] for e in manifest["shards"]) / manifest["num_samples"]
            members = (f"target.{ext}", f"composite.{ext}", "mask.png", "alpha.png", "params.json")
            print(table.row(name, *(s[m] for m in members), per))
    print("\n(total includes the tar headers: 512 bytes per member plus padding)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
