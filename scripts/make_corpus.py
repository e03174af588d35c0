"""Write a small image corpus in img2dataset's layout from scikit-image's photos, with the
defects a real crawl has (a truncated JPEG, a tiny image, a PNG-keyed sample, a failed
download), for `make demo` and for trying `data.source=corpus` and corpus builds offline.

    .venv/bin/python scripts/make_corpus.py runs/demo/corpus [--shards 2] [--per-shard 12]
"""

from __future__ import annotations

import argparse
import sys

from pixperfect.corpus.synthetic import DEFECTS, skimage_photos, write_corpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--per-shard", type=int, default=12)
    parser.add_argument("--side", type=int, default=256, help="shorter side of the images")
    args = parser.parse_args()
    paths = write_corpus(
        args.out, skimage_photos(), args.shards, args.per_shard, args.side, defects=DEFECTS
    )
    pattern = f"{args.out}/{{00000..{len(paths) - 1:05d}}}.tar"
    print(f"corpus: {len(paths)} tars x {args.per_shard} samples ({', '.join(DEFECTS)} in the")
    print(f"first), read it as {pattern}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
