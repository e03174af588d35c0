"""``pixperfect shards verify``: check a shard folder against its manifest.

Every shard is opened: size and sha256 against the manifest, the tar read to the end, its
samples grouped and counted, and (unless ``decode=False``) every sample decoded with the
same code the training reader uses. The report names each bad shard and sample.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pixperfect.shards.build import MANIFEST
from pixperfect.shards.format import decode_sample


@dataclass
class ShardReport:
    name: str
    expected: int
    found: int = 0
    decoded: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    folder: Path
    shards: list[ShardReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # folder-level (manifest, strays)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.shards)

    def format(self) -> str:
        lines = [f"{'shard':<22}{'expected':>9}{'found':>7}{'decoded':>9}  status"]
        for s in self.shards:
            status = "ok" if not s.problems else "; ".join(s.problems)
            lines.append(f"{s.name:<22}{s.expected:>9}{s.found:>7}{s.decoded:>9}  {status}")
        lines += [f"folder: {p}" for p in self.problems]
        bad = sum(1 for s in self.shards if s.problems)
        verdict = "OK" if self.ok else f"FAILED ({bad} bad shard(s), {len(self.problems)} other)"
        lines.append(f"{self.folder}: {len(self.shards)} shard(s) checked: {verdict}")
        return "\n".join(lines)


def _samples(path: Path) -> tuple[dict[str, dict], str | None]:
    """Records by key as webdataset groups them, and the read error that stopped the tar."""
    records: dict[str, dict] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                records.setdefault(key, {"__key__": key, "__url__": str(path)})[suffix] = data
    except (tarfile.TarError, OSError, EOFError) as e:
        return records, f"unreadable tar ({type(e).__name__}: {e})"
    return records, None


def verify_shard(path: Path, entry: dict, kind: str, decode: bool) -> ShardReport:
    report = ShardReport(entry["name"], entry["samples"])
    if not path.is_file():
        report.problems.append("missing")
        return report
    data = path.read_bytes()
    if len(data) != entry["bytes"]:
        report.problems.append(f"size {len(data)} bytes, manifest says {entry['bytes']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        report.problems.append("sha256 differs from the manifest")
    records, error = _samples(path)
    if error:
        report.problems.append(error)
    report.found = len(records)
    if report.found != report.expected:
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


def verify(folder: str | Path, decode: bool = True, progress: bool = True) -> VerifyReport:
    folder = Path(folder)
    report = VerifyReport(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        report.problems.append(
            f"no {MANIFEST}: the build is incomplete (rerun `pixperfect shards build` with the "
            "same arguments to finish it) or this is not a shard folder"
        )
        return report
    try:
        manifest = json.loads(manifest_path.read_text())
        entries, kind = manifest["shards"], manifest["kind"]
    except (ValueError, KeyError) as e:
        report.problems.append(f"{MANIFEST} is unreadable: {e}")
        return report
    for entry in tqdm(entries, desc="verify", unit="shard", disable=not progress):
        report.shards.append(verify_shard(folder / entry["name"], entry, kind, decode))
    listed = {e["name"] for e in entries}
    strays = sorted(p.name for p in folder.glob("shard-*.tar") if p.name not in listed)
    if strays:
        report.problems.append(f"tar files not in the manifest: {', '.join(strays)}")
    return report
