"""Writing shards so that a kill or a full disk never leaves a file a reader would trust.

- A shard is written as ``NAME.tar.partial`` (:class:`ShardFile`), fsynced, hashed and
  renamed when closed, so a killed build never leaves a truncated file under a shard name
  (webdataset's ``ShardWriter`` writes straight to the final name, hence ``TarWriter`` per
  shard here); then its sidecar ``NAME.json`` (samples, bytes, sha256, what was skipped and
  why), the completeness marker, and at the end ``manifest.json``, each to a ``.partial``
  name, fsynced and renamed. A failed write removes its ``.partial`` file (and a shard whose
  sidecar could not be written loses its tar too); a rerun removes those a killed build
  left (:func:`remove_leftovers`).
- A shard is complete when its sidecar exists and its tar has the recorded size
  (:func:`is_complete`); everything else is rebuilt.
- A full disk (ENOSPC, or EDQUOT) is tagged with what was being written (:func:`note_full`)
  and becomes :class:`DiskFullError` (:func:`disk_full_message`): the folder, the room the
  shards still to build need, the room free, and that a rerun resumes.

Shard names are paths relative to the output folder (``shard-000003.tar``, or
``0000/00042-r1.tar`` for a corpus build's sub-folders).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import webdataset as wds

from pixperfect import __version__
from pixperfect.atomic import FULL, atomic_file, fsync_dir
from pixperfect.errors import WorkFailed
from pixperfect.shards.recipe import MANIFEST

SKIP_EXAMPLES = 5  # skip lines a sidecar keeps (the counts are complete)
MANIFEST_EXAMPLES = 20  # skip lines the manifest keeps


class DiskFullError(WorkFailed, OSError):
    """The output folder ran out of space (or quota) while building; the message names the
    folder, the space still needed and the space free, and says that a rerun resumes."""


def sidecar_path(out: Path, name: str) -> Path:
    return out / (name.removesuffix(".tar") + ".json")


def is_complete(out: Path, name: str) -> bool:
    sidecar, tar = sidecar_path(out, name), out / name
    if not (sidecar.is_file() and tar.is_file()):
        return False
    try:
        return json.loads(sidecar.read_text())["bytes"] == tar.stat().st_size
    except (ValueError, KeyError):
        return False


def note_full(error: BaseException, file: str, size: int = 0, samples: int = 0) -> None:
    """Tag a no-space error with what was being written (kept when it crosses processes), for
    :func:`disk_full_message`; the first tag wins."""
    if isinstance(error, OSError) and error.errno in FULL and not hasattr(error, "full_at"):
        error.full_at = {"file": file, "bytes": size, "samples": samples}


def atomic_write(path: Path, text: str) -> None:
    """``text`` to ``path`` whole or not at all (:func:`pixperfect.atomic.atomic_file`), through
    a ``.partial`` file of this process: array tasks may race on the manifest."""
    try:
        with atomic_file(path, path.with_name(f"{path.name}.{os.getpid()}.partial")) as stream:
            stream.write(text.encode("utf-8"))
    except BaseException as e:
        note_full(e, path.name)
        raise


def remove_leftovers(out: Path, names: Iterable[str]) -> None:
    """``.partial`` files of these shards (tar and sidecar) that a killed build left behind."""
    for name in names:
        path = out / name
        if path.parent.is_dir():
            for leftover in path.parent.glob(path.name.removesuffix(".tar") + ".*partial"):
                leftover.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ShardFile:
    """One shard being written: records go to ``NAME.partial``; :meth:`finish` closes, fsyncs,
    hashes and renames it and writes its sidecar; :meth:`discard` (or leaving a ``with``
    block by an exception) removes what was written. Several may be open at once."""

    def __init__(self, out: Path, name: str) -> None:
        self.out, self.name = out, name
        self.tar = out / name
        self.partial = self.tar.with_name(self.tar.name + ".partial")
        self.samples = 0
        self.done = False
        self._renamed = False
        try:
            self.tar.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(self.partial, "wb")
        except BaseException as e:
            note_full(e, name)
            raise
        self.writer = wds.TarWriter(
            self._stream,
            encoder=False,
            mtime=0,  # fixed for reproducible bytes; an int, as a float costs a pax header
            user="pixperfect",
            group="pixperfect",
        )

    def __enter__(self) -> ShardFile:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None and not self.done:
            self.discard(error)

    def write(self, record: dict) -> None:
        self.writer.write(record)
        self.samples += 1

    def finish(self, skipped: Counter | None = None, examples: Sequence[str] = ()) -> dict:
        """Close, fsync, rename; then the sidecar (the completeness marker), which is returned.
        On failure nothing of this shard is left (the error is re-raised)."""
        try:
            self.writer.close()
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
            digest = _sha256(self.partial)
            sidecar = sidecar_path(self.out, self.name)
            sidecar.unlink(missing_ok=True)  # an old one never vouches for a new tar
            os.replace(self.partial, self.tar)
            self._renamed = True
            fsync_dir(self.tar.parent)
            record = {
                "name": self.name,
                "samples": self.samples,
                "bytes": self.tar.stat().st_size,
                "sha256": digest,
                "skipped": dict(sorted((skipped or Counter()).items())),
                "examples": list(examples[:SKIP_EXAMPLES]),
            }
            atomic_write(sidecar, json.dumps(record, indent=1, sort_keys=True))
        except BaseException as e:
            self.discard(e)
            raise
        self.done = True
        return record

    def discard(self, error: BaseException | None = None) -> None:
        """Remove the ``.partial`` file (and the tar, if renamed without its sidecar)."""
        self.done = True
        # The file is dropped: mark tarfile's stream closed, or collecting it would write its
        # buffer to the closed file and print an "Exception ignored" traceback.
        self.writer.tarstream.closed = True
        if hasattr(self.writer.tarstream.fileobj, "closed"):
            self.writer.tarstream.fileobj.closed = True
        try:
            self._stream.close()
        except OSError:
            pass
        size = self.partial.stat().st_size if self.partial.exists() else 0
        if error is not None:
            note_full(error, self.name, size, self.samples)
        self.partial.unlink(missing_ok=True)
        if self._renamed:
            self.tar.unlink(missing_ok=True)  # no sidecar, no shard: a rerun rebuilds it


def skip_totals(sidecars: Iterable[dict]) -> tuple[dict[str, int], list[str]]:
    """Skips per reason summed over sidecars, and the first few example lines. Sidecars of
    builds before the counts listed one line per skipped sample: counted as ``other``."""
    totals: Counter = Counter()
    examples: list[str] = []
    for s in sidecars:
        skipped = s.get("skipped") or {}
        if isinstance(skipped, list):
            totals["other"] += len(skipped)
            lines = skipped
        else:
            totals.update(skipped)
            lines = s.get("examples", [])
        if len(examples) < MANIFEST_EXAMPLES:
            examples += [f"{s['name']}: {line}" for line in lines]
    return dict(sorted(totals.items())), examples[:MANIFEST_EXAMPLES]


def write_manifest_if_complete(out: Path, names: Sequence[str], header: dict) -> Path | None:
    """``manifest.json`` from the sidecars once every shard is complete (else None): the
    ``header`` (recipe, its hash...), each shard's samples, bytes and sha256, and what was
    skipped, as totals per reason (no list of images)."""
    if not all(is_complete(out, n) for n in names):
        return None
    shards = [json.loads(sidecar_path(out, n).read_text()) for n in names]
    skipped, examples = skip_totals(shards)
    manifest = {
        "tool": "pixperfect",
        "version": __version__,
        **header,
        "num_shards": len(shards),
        "num_samples": sum(s["samples"] for s in shards),
        "shards": [{k: s[k] for k in ("name", "samples", "bytes", "sha256")} for s in shards],
        "skipped": skipped,
        "skip_examples": examples,
    }
    path = out / MANIFEST
    atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def human(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def disk_full_message(
    out: Path,
    names: Sequence[str],
    mine: Sequence[str],
    num_tasks: int,
    error: OSError,
    samples_of: Callable[[list[str]], float],
    bytes_if_unknown: float,
) -> str:
    """One line: the folder, what failed, the room the shards still to build need (bytes per
    sample of the complete shards, else of the shard that failed, else ``bytes_if_unknown``;
    ``samples_of(names)`` says how many samples those shards will hold) and the room free,
    and that a rerun resumes."""
    at = getattr(error, "full_at", {})
    left = [n for n in mine if not is_complete(out, n)]
    done = [json.loads(sidecar_path(out, n).read_text()) for n in names if is_complete(out, n)]
    if sum(r["samples"] for r in done):
        per_sample = sum(r["bytes"] for r in done) / sum(r["samples"] for r in done)
    elif at.get("samples"):
        per_sample = at["bytes"] / at["samples"]
    else:
        per_sample = bytes_if_unknown
    need = per_sample * samples_of(left)
    need += 4096 * (len(left) + 1) + 256 * len(names)  # sidecars and the manifest
    existing = next(p for p in (out, *out.parents) if p.exists())  # mkdir may have failed
    free = shutil.disk_usage(existing).free
    what = at.get("file") or (Path(error.filename).name if error.filename else "a file")
    mine_note = " of this task" if num_tasks > 1 else ""
    todo = (
        f"the {len(left)} shard(s){mine_note} still to build need about {human(need)}"
        if left
        else f"every shard{mine_note} is complete, the manifest needs about {human(need)}"
    )
    more = f"free at least {human(need - free)} more" if need > free else "free more space"
    return (
        f"{out}: {os.strerror(error.errno).lower()} while writing {what}: {todo}, "
        f"{human(free)} is free there; {more}, then rerun the same command: it keeps the "
        f"{len(done)} complete shard(s) and resumes the build"
    )
