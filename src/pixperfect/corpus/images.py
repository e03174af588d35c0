"""Reading a corpus's images with input hygiene: every image is either yielded or skipped
and counted under one reason.

- The image of a sample is its first member among :data:`IMAGE_EXTS`; a sample with none
  is ``no_image`` (img2dataset writes ``.json`` alone for a failed download).
- ``truncated``: a JPEG cut before its end-of-image marker (``FF D9``), a PNG without its
  ``IEND`` chunk, a WebP shorter than its RIFF header says. Decoders often return the top of
  such an image with grey below it; training on that teaches grey. Checked on the bytes,
  before decoding.
- ``undecodable``: OpenCV cannot decode the bytes.
- ``too_small``: the shorter side is under ``min_side`` (default: the crop size) and
  ``small=skip``; with ``small=upscale`` it is kept (and counted as ``upscaled``; the crop
  upsamples it).
- ``duplicate``: with ``dedupe`` on, the same bytes already read by this reader (a build
  task or a loader worker; the last :data:`DEDUPE_WINDOW` images by a 64-bit hash).
- ``read_error``: a tar that cannot be opened or ends early; what it held before is kept.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import webdataset as wds

from pixperfect.errors import InputError
from pixperfect.shards import locations  # noqa: F401  (registers the bounded-time openers)
from pixperfect.shards.format import SOURCE_EXTS, decode_image  # one decoder for both
from pixperfect.shards.recipe import SMALL_IMAGES

log = logging.getLogger(__name__)

IMAGE_EXTS = SOURCE_EXTS  # what --format source stores as source.<ext>: the same list
SKIP_REASONS = ("no_image", "truncated", "undecodable", "too_small", "duplicate", "read_error")
DEDUPE_WINDOW = 1 << 20  # hashes remembered per reader (~100 MB of Python ints at most)
LOGGED_PER_REASON = 3  # the first few of each reason are logged with their key


@dataclass(frozen=True)
class Hygiene:
    """What a reader keeps: images whose shorter side is at least ``min_side`` (``small=
    "upscale"``: smaller ones too), and with ``dedupe`` each content only once."""

    min_side: int = 0
    small: str = "skip"
    dedupe: bool = False

    def __post_init__(self) -> None:
        if self.small not in SMALL_IMAGES:
            raise InputError(
                f"small images {self.small!r}: choose one of {', '.join(SMALL_IMAGES)}"
            )
        if self.min_side < 0:
            raise InputError(f"min_side must be >= 0, got {self.min_side}")


@dataclass
class SkipTally:
    """Counts per skip reason (and ``read``/``kept``/``upscaled``); a webdataset error
    handler too (a failed tar read counts as ``read_error`` and the stream goes on)."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few of each reason

    def skip(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= LOGGED_PER_REASON:
            self.examples.append(f"{where} ({reason.replace('_', ' ')})")
            log.warning("corpus: skipped %s", self.examples[-1])

    def __call__(self, exn: BaseException) -> bool:
        self.skip("read_error", str(exn)[:300])
        return True

    @property
    def skipped(self) -> dict[str, int]:
        return {r: self.counts[r] for r in SKIP_REASONS if self.counts[r]}

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


@dataclass
class CorpusImage:
    key: str
    url: str  # the input shard it came from
    ext: str
    data: bytes  # the encoded image as stored in the corpus
    pixels: np.ndarray  # (H, W, 3) uint8 RGB


def image_member(record: dict) -> tuple[str, bytes] | None:
    """The sample's image as (extension, bytes), the first of :data:`IMAGE_EXTS` present."""
    for ext in IMAGE_EXTS:
        data = record.get(ext)
        if isinstance(data, bytes | bytearray):
            return ext, bytes(data)
    return None


def integrity_error(data: bytes, ext: str) -> str | None:
    """Why the bytes are not a whole image (``"truncated"``), or None. Cheap: looks at the
    first and last bytes only."""
    if ext in ("jpg", "jpeg"):
        if not data.startswith(b"\xff\xd8"):
            return "undecodable"
        # Some writers pad after the end marker; entropy-coded data never holds FF D9.
        return None if b"\xff\xd9" in data[-64:].rstrip(b"\x00\r\n ") else "truncated"
    if ext == "png":
        return None if b"IEND" in data[-64:] else "truncated"
    if ext == "webp":
        if data[:4] != b"RIFF" or len(data) < 12:
            return "undecodable"
        return None if len(data) >= int.from_bytes(data[4:8], "little") + 8 else "truncated"
    return None


class _Seen:
    """The last ``window`` content hashes (an LRU), for exact-duplicate skipping."""

    def __init__(self, window: int = DEDUPE_WINDOW) -> None:
        self.window, self.hashes = window, OrderedDict()

    def add(self, data: bytes) -> bool:
        """True when ``data`` was seen before."""
        h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
        if h in self.hashes:
            self.hashes.move_to_end(h)
            return True
        self.hashes[h] = None
        if len(self.hashes) > self.window:
            self.hashes.popitem(last=False)
        return False


def checked_image(record: dict, hygiene: Hygiene, tally: SkipTally, seen: _Seen | None):
    """The record's image as a :class:`CorpusImage`, or None (skipped and counted)."""
    tally.counts["read"] += 1
    where = f"{record.get('__url__', '?')}:{record.get('__key__', '?')}"
    member = image_member(record)
    if member is None:
        tally.skip("no_image", where)
        return None
    ext, data = member
    reason = integrity_error(data, ext)
    if reason:
        tally.skip(reason, where)
        return None
    if seen is not None and seen.add(data):
        tally.skip("duplicate", where)
        return None
    try:
        pixels = decode_image(data)
    except ValueError:
        tally.skip("undecodable", where)
        return None
    if min(pixels.shape[:2]) < hygiene.min_side:
        if hygiene.small == "skip":
            tally.skip("too_small", where)
            return None
        tally.counts["upscaled"] += 1
    tally.counts["kept"] += 1
    return CorpusImage(record.get("__key__", ""), record.get("__url__", ""), ext, data, pixels)


def corpus_images(
    urls: Iterable[str], hygiene: Hygiene, tally: SkipTally | None = None
) -> Iterator[CorpusImage]:
    """The kept images of the shards ``urls``, in tar order; ``tally`` counts the rest."""
    tally = tally if tally is not None else SkipTally()
    seen = _Seen() if hygiene.dedupe else None
    records = wds.tarfile_to_samples(handler=tally)({"url": u} for u in urls)
    for record in records:
        image = checked_image(record, hygiene, tally, seen)
        if image is not None:
            yield image
