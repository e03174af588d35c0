"""Corpus route against shards and a loose folder; dry-run planning at 10^8 images; bytes
per sample per shard format.

    .venv/bin/python benchmarks/bench_corpus.py [--photos DIR] [--n-photos 64] [--size 256]

Writes a synthetic corpus in img2dataset's layout (real photos resized to a 512 px shorter
side, JPEG quality 95, 16 images per tar) and prints three tables:
1. clean samples/s per loader worker (0, 1, 2 workers; both streams with a 64-sample
   shuffle buffer): the corpus route (``data.source=corpus``, crops made in the workers),
   this project's clean shards (the shard reader) and a loose folder of the same JPEGs (a
   map-style dataset decoding one file per sample);
2. plan time and peak memory of ``pixperfect shards build --dry-run`` over 10^5 input shards
   (10^8 images at 1000 per shard), in a fresh process, opening no shard;
3. bytes per 512^2 sample for each shard format on the same corpus, with the target's
   fidelity.

Photos default to ../shared/data/photos/train (real photos).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from harness import ROOT, Columns, machine_line, read_rate, repeat, stopwatch, use_command_allocator
from torch.utils.data import DataLoader, Dataset

from pixperfect.corpus.synthetic import write_corpus
from pixperfect.data.crops import random_crop
from pixperfect.imageio import read_image, to_rgb_float

DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "train"
DRY_RUN_SHARDS = 100_000
PAPER_IMAGES, PAPER_CROPS = 300_000_000, 4  # the scale: 300M images, 4 crops each


def load_photos(folder: Path, n: int) -> list[np.ndarray]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not paths:
        raise SystemExit(f"no photos under {folder} (give --photos DIR)")
    step = max(1, len(paths) // n)  # spread over the collections
    return [
        (to_rgb_float(read_image(p).pixels).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        for p in paths[::step][:n]
    ]


class LooseJpegs(Dataset):
    """The baseline a user might write: one JPEG file per image, decoded and cropped per
    sample."""

    def __init__(self, folder: Path, size: int) -> None:
        self.files, self.size = sorted(folder.glob("*.jpg")), size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        pixels = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)[..., ::-1].copy()
        image = torch.from_numpy(pixels).permute(2, 0, 1)
        crop = random_crop(image, self.size, torch.Generator().manual_seed(i))
        return {"target": crop.contiguous()}


def extract(corpus: Path, folder: Path) -> None:
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    for tar_path in sorted(corpus.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    (folder / m.name).write_bytes(tar.extractfile(m).read())


def corpus_loader(pattern: str, size: int, batch: int, workers: int) -> DataLoader:
    from pixperfect.training.corpus_stream import corpus_stream

    stream = corpus_stream(
        pattern, batch, crop_size=size, workers=workers, epoch_samples=10**6, shuffle_buffer=64
    )
    return DataLoader(stream, batch_size=None, num_workers=workers)


def shard_loader(shards: Path, batch: int, workers: int) -> DataLoader:
    from pixperfect.shards.reader import training_stream

    stream = training_stream(shards, batch, workers=workers, epoch_samples=10**6, shuffle_buffer=64)
    return DataLoader(stream, batch_size=None, num_workers=workers)


def dry_run(tmp: Path) -> tuple[float, float, str]:
    """Seconds and peak MB of a dry-run over DRY_RUN_SHARDS input shards that do not exist
    (so opening any would fail), in a fresh process."""
    pattern = f"https://host.invalid/corpus/{{00000..{DRY_RUN_SHARDS - 1:05d}}}.tar"
    cmd = [
        sys.executable, "-c", "import sys; from pixperfect.cli import main; sys.exit(main())",
        "shards", "build", "--images", pattern,
        "--out", str(tmp / "dry"), "--kind", "clean", "--size", "512",
        "--crops-per-image", "4", "--num-tasks", "16", "--task-index", "0", "--dry-run",
    ]  # fmt: skip
    with stopwatch() as elapsed:
        done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = elapsed.seconds
    if done.returncode:
        raise SystemExit(f"dry-run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak_mb, done.stdout.strip().splitlines()[-1] if done.stdout else ""


def read_table(args: argparse.Namespace, pattern: str, tmp: Path) -> None:
    """Samples/s of each clean route, best of ``--repeats`` (this machine's timing noise is
    about 15%), and per loader worker."""
    from pixperfect.cli import main as cli

    shards = tmp / "clean-shards"
    build = ["shards", "build", "--images", pattern, "--out", str(shards), "--kind", "clean",
             "--size", str(args.size), "--crops-per-image", "1", "--format", "png"]  # fmt: skip
    if cli(build) != 0:
        raise SystemExit("building the clean shards failed")
    extract(tmp / "corpus", tmp / "loose")
    b = args.batch
    table = Columns(
        (f"read clean {args.size} px crops (batch {b})", "<36"), ("workers", ">8"),
        ("samples/s", ">11.1f"), ("per worker", ">12.1f"),
    )  # fmt: skip
    print(table.header())
    for workers in (0, 1, 2):
        rates: dict[str, list[float]] = {"corpus": [], "shards": [], "loose": []}
        for _ in range(args.repeats):
            loaders = {
                "corpus": corpus_loader(pattern, args.size, b, workers),
                "shards": shard_loader(shards, b, workers),
            }
            for name, loader in loaders.items():
                rates[name].append(read_rate(loader, args.read_batches, b))
            loose = DataLoader(LooseJpegs(tmp / "loose", args.size), batch_size=b,
                               shuffle=True, num_workers=workers, drop_last=True)  # fmt: skip
            loops = -(-args.read_batches * b // len(loose.dataset)) + 1
            rates["loose"].append(read_rate(repeat(loose, loops), args.read_batches, b))
        labels = {
            "corpus": "corpus route (data.source=corpus)",
            "shards": "clean shards (png, shard reader)",
            "loose": "loose JPEG folder (map-style)",
        }
        for name, label in labels.items():
            best = max(rates[name])
            print(table.row(label, workers, best, best / max(1, workers)))


def dry_run_table(tmp: Path) -> None:
    seconds, peak_mb, last = dry_run(tmp)
    table = Columns(
        ("dry-run plan", "<36"),
        ("input shards", ">13,"),
        ("seconds", ">9.1f"),
        ("peak MB", ">9.0f"),
    )
    print("\n" + table.header())
    print(table.row("shards build --dry-run (CLI)", DRY_RUN_SHARDS, seconds, peak_mb))
    print(f"  {last}")
    print("  (peak MB is the whole process: Python, torch and the CLI's imports included)")


def bytes_table(pattern: str, limit: int) -> None:
    """Bytes per 512^2 sample per format, and what the paper's data would take in each."""
    from pixperfect.corpus.sizes import format_costs
    from pixperfect.shards.format import LOSSLESS_FORMATS

    costs = format_costs(pattern, 512, limit=limit)
    samples = PAPER_IMAGES * PAPER_CROPS
    smallest = min(costs[f]["bytes"] for f in LOSSLESS_FORMATS if f in costs)
    table = Columns(
        ("format (512 px clean sample)", "<30"), ("bytes", ">10,.0f"), ("/ smallest", ">11.2f"),
        ("min PSNR dB", ">12"), ("paper data TB", ">15,.0f"),
    )  # fmt: skip
    print("\n" + table.header())
    for fmt, c in costs.items():
        psnr = "exact" if c["min_psnr_db"] == float("inf") else f"{c['min_psnr_db']:.2f}"
        print(table.row(fmt, c["bytes"], c["bytes"] / smallest, psnr, c["bytes"] * samples / 1e12))
    print(table.row("corpus route (no re-pack)", 0, 0, "exact", 0))
    print("  / smallest: against the smallest lossless pixel format (png, webp)")
    print(f"  paper data: {PAPER_IMAGES / 1e6:.0f}M images x {PAPER_CROPS} crops; the corpus "
          f"route reads the source tars as they are (measured over {limit} images)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--n-photos", type=int, default=64)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="crop size of the read table")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--read-batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=(), choices=("read", "dry-run", "bytes"))
    args = parser.parse_args()
    allocator = use_command_allocator()
    photos = load_photos(Path(args.photos), args.n_photos)
    print(machine_line())
    print(f"cv2 {cv2.__version__}, allocator: {allocator}; {len(photos)} photos from {args.photos}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_corpus(tmp / "corpus", photos, shards=args.shards, per_shard=args.per_shard, side=512)
        pattern = f"{tmp / 'corpus'}/{{00000..{args.shards - 1:05d}}}.tar"
        n = args.shards * args.per_shard
        print(f"corpus: {n} JPEGs (q95, 512 px shorter side) in {args.shards} tars\n")
        if "read" not in args.skip:
            read_table(args, pattern, tmp)
        if "dry-run" not in args.skip:
            dry_run_table(tmp)
        if "bytes" not in args.skip:
            bytes_table(pattern, min(n, 64))
    return 0


if __name__ == "__main__":
    sys.exit(main())
