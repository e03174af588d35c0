"""``pixperfect shards verify``: check shards against their manifest.

Every shard is streamed once: size and sha256 against the manifest, the tar read to the
end, its samples grouped and counted, and (unless ``decode=False``) every sample decoded
with the same code the training reader uses. The report names each bad shard and sample.
The shards may be a local folder, a manifest URL, or a shard URL pattern
(:mod:`pixperfect.shards.locations`); a pattern without a manifest beside it has no sizes,
checksums or counts to check against, so only reading and decoding are checked (and the
report says so). ``workers`` shards are checked at once (threads).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tqdm import tqdm

from pixperfect.shards.format import decode_sample
from pixperfect.shards.locations import is_pattern, is_url, open_url, resolve
from pixperfect.shards.recipe import MANIFEST


@dataclass
class ShardReport:
    name: str
    expected: int | None  # None: no manifest says
    found: int = 0
    decoded: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    folder: Path | str  # or the manifest URL or shard pattern
    shards: list[ShardReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # folder-level (manifest, strays)
    notes: list[str] = field(default_factory=list)  # what was not checked

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.shards)

    def format(self) -> str:
        lines = [f"{'shard':<22}{'expected':>9}{'found':>7}{'decoded':>9}  status"]
        for s in self.shards:
            status = "ok" if not s.problems else "; ".join(s.problems)
            expected = "?" if s.expected is None else s.expected
            lines.append(f"{s.name:<22}{expected:>9}{s.found:>7}{s.decoded:>9}  {status}")
        lines += [f"folder: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        bad = sum(1 for s in self.shards if s.problems)
        verdict = "OK" if self.ok else f"FAILED ({bad} bad shard(s), {len(self.problems)} other)"
        lines.append(f"{self.folder}: {len(self.shards)} shard(s) checked: {verdict}")
        return "\n".join(lines)


class _Hashing:
    """A read-only stream that hashes and counts what passes through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.sha256, self.bytes = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data


def _drain(stream: _Hashing) -> bool:
    """Read ``stream`` to its end (so its hash covers every byte); False if that failed."""
    try:
        while stream.read(1 << 20):
            pass
    except OSError:
        return False
    return True


def _samples(stream: _Hashing, url: str) -> tuple[dict[str, dict], str | None, bool]:
    """Records by key as webdataset groups them, the read error that stopped the tar, and
    whether the stream was read to its end (its size and hash are then the object's)."""
    records: dict[str, dict] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                records.setdefault(key, {"__key__": key, "__url__": url})[suffix] = data
    except (tarfile.TarError, EOFError) as e:  # damaged bytes: the rest still count
        return records, f"unreadable tar ({type(e).__name__}: {e})", _drain(stream)
    except OSError as e:  # the transfer broke
        return records, f"unreadable ({type(e).__name__}: {e})", False
    return records, None, _drain(stream)  # the padding after the end-of-archive blocks


def verify_shard(path: Path | str, entry: dict, kind: str, decode: bool) -> ShardReport:
    """One shard, a local path or any URL webdataset opens, against its manifest ``entry``
    (whose ``samples``, ``bytes`` and ``sha256`` may be None: not checked)."""
    report = ShardReport(entry["name"], entry.get("samples"))
    url = str(path)
    if not is_url(url) and not Path(url).is_file():
        report.problems.append("missing")
        return report
    try:
        stream = open_url(url)
    except FileNotFoundError as e:
        report.problems.append(f"missing ({e})")
        return report
    except (OSError, ValueError) as e:
        report.problems.append(f"unreadable ({type(e).__name__}: {e})")
        return report
    with stream:
        hashing = _Hashing(stream)
        records, error, complete = _samples(hashing, url)
    if complete and entry.get("bytes") is not None and hashing.bytes != entry["bytes"]:
        report.problems.append(f"size {hashing.bytes} bytes, manifest says {entry['bytes']}")
    if complete and entry.get("sha256") and hashing.sha256.hexdigest() != entry["sha256"]:
        report.problems.append("sha256 differs from the manifest")
    if error:
        report.problems.append(error)
    report.found = len(records)
    if report.expected is not None and report.found != report.expected:
        report.problems.append(f"{report.found} samples, manifest says {report.expected}")
    if decode:
        for key, record in records.items():
            try:
                decode_sample(record, kind)
                json.loads(record.get("params.json", b"{}"))
                report.decoded += 1
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                report.problems.append(f"sample {key!r}: {e}")
    return report


def verify(
    folder: str | Path, decode: bool = True, progress: bool = True, workers: int = 1
) -> VerifyReport:
    """Check the shards of a local folder, a manifest URL or a shard pattern (see the
    module docstring); a local folder is also checked for tar files the manifest omits.
    ``workers`` shards are checked at once, in threads (reading, hashing and decoding
    release the GIL); the report keeps the manifest's order."""
    text = str(folder)
    local = not (is_url(text) or is_pattern(text) or text.endswith(".json"))
    report = VerifyReport(Path(folder) if local else text)
    if local and not (Path(folder) / MANIFEST).is_file():
        report.problems.append(
            f"no {MANIFEST}: the build is incomplete (rerun `pixperfect shards build` with the "
            "same arguments to finish it) or this is not a shard folder"
        )
        return report
    try:
        manifest = resolve(folder)
    except (OSError, ValueError) as e:
        report.problems.append(f"cannot read the shards' manifest or first shards: {e}")
        return report
    if manifest["num_samples"] is None:
        report.notes.append(
            "no manifest: sizes, checksums and sample counts were not checked (point at the "
            "manifest's URL to check them)"
        )
    shards = list(zip(manifest["shards"], manifest["urls"], strict=True))
    bar = tqdm(total=len(shards), desc="verify", unit="shard", disable=not progress)

    def check(item: tuple[dict, str]) -> ShardReport:
        result = verify_shard(item[1], item[0], manifest["kind"], decode)
        bar.update(1)
        return result

    with bar:
        if workers <= 1:
            report.shards = [check(item) for item in shards]
        else:
            with ThreadPoolExecutor(workers) as pool:
                report.shards = list(pool.map(check, shards))
    if local:
        listed = {entry["name"] for entry in manifest["shards"]}
        root = Path(folder)
        tars = [p.relative_to(root).as_posix() for p in root.glob("shard-*.tar")]
        tars += [p.relative_to(root).as_posix() for p in root.glob("[0-9][0-9][0-9][0-9]/*.tar")]
        strays = sorted(name for name in tars if name not in listed)
        if strays:
            report.problems.append(f"tar files not in the manifest: {', '.join(strays)}")
    return report
