"""Where shards live: what ``data.shards`` may name, and opening what it names.

This module owns turning a location into a manifest with shard URLs
(:func:`resolve`, behind :func:`pixperfect.shards.reader.read_manifest`) and the
bounded-time openers the readers use. A location is one of:

- a local folder holding ``manifest.json`` (or the path of a manifest file);
- a manifest URL: ``https://host/x/manifest.json``, ``http://``, ``file://``, ``s3://``
  (through the ``aws`` command), a directory URL (``https://host/x/``, ``manifest.json``
  is read from it), or ``pipe:CMD`` printing a manifest. Shard names are resolved relative
  to the manifest URL; a ``pipe:`` manifest must list absolute URLs or paths, since the
  URL inside a command is not parsed;
- a URL or brace pattern of shards that webdataset opens (``https://host/x/shard-{000000..
  000009}.tar``, ``pipe:curl -sf https://.../shard-{000000..000009}.tar``, ``s3://...``,
  local paths). With a ``manifest.json`` in the same directory (not for ``pipe:``) listing
  every shard, its counts are used; without one the kind and sample size come from the
  first readable sample and the counts are unknown (``None``): what needs them refuses
  (:func:`require_counts`).

Opening goes through webdataset's ``gopen`` (as the readers do), with our openers
registered in ``webdataset.gopen.gopen_schemes`` at import (so in DataLoader workers too,
which import this module when they unpickle the pipeline): webdataset 1.0.2 runs ``curl``
for http(s) with retries but no stall timeout and checks its exit status racily, so a dead
server could hang a reader for ever or cut a shard silently. Ours fail within
:func:`read_timeout` seconds without a byte (``PIXPERFECT_READ_TIMEOUT``, default
``READ_TIMEOUT_S``), retry an HTTP "try again" status (:data:`RETRY_STATUSES`) at open,
make any other HTTP error (404...) an error, and a transfer shorter than its
``Content-Length`` or a command that exits non-zero an error naming the URL.
"""

from __future__ import annotations

import http.client
import importlib
import io
import json
import os
import re
import select
import shlex
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

import webdataset as wds

from pixperfect.errors import InputError, MissingFileError, ReadFailed
from pixperfect.shards.format import decode_sample
from pixperfect.shards.recipe import MANIFEST

READ_TIMEOUT_S = 60.0  # seconds without a byte (or a connection) before a read fails
# HTTP answers that say "try again" (rate limits, a busy or restarting server: S3's
# 503 SlowDown, a proxy's 502) are retried at open, before any byte is read, after
# RETRY_WAIT_S doubling each time or the server's Retry-After (capped): a cluster's
# thousands of readers must not lose a shard to a moment of load.
RETRY_STATUSES = (429, 500, 502, 503, 504)
OPEN_RETRIES = 3
RETRY_WAIT_S = 1.0
MAX_RETRY_WAIT_S = 30.0
TIMEOUT_ENV = "PIXPERFECT_READ_TIMEOUT"
KIND_PROBE_SHARDS = 3  # shards of a bare pattern tried for a first readable sample
# the module (``webdataset.gopen`` the attribute is the function of the same name)
wds_gopen = importlib.import_module("webdataset.gopen")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")
_TAR = re.compile(r"\.(tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$")
_ORIGINAL = dict(wds_gopen.gopen_schemes)  # webdataset's own, for write modes


def read_timeout() -> float:
    """Seconds a read may wait for a connection or the next byte before it fails."""
    return float(os.environ.get(TIMEOUT_ENV, READ_TIMEOUT_S))


class HttpReader(io.RawIOBase):
    """An http(s) GET as a stream: socket timeouts bound connecting and every read, an
    HTTP error status raises (404 as ``FileNotFoundError``), and a body shorter than its
    ``Content-Length`` raises instead of ending early."""

    def __init__(self, url: str, timeout: float | None = None) -> None:
        super().__init__()
        self.url, self.timeout = url, read_timeout() if timeout is None else timeout
        self._got = 0
        self._response = _http_open(url, self.timeout)
        length = self._response.headers.get("Content-Length")
        chunked = "chunked" in self._response.headers.get("Transfer-Encoding", "").lower()
        self._expected = int(length) if length and length.isdigit() and not chunked else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            n = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as e:
            raise ReadFailed(
                f"{self.url}: transfer broke after {self._got} bytes ({type(e).__name__}: {e}; "
                f"no data for {self.timeout:g} s counts as broken)"
            ) from None
        if n == 0 and len(buffer) and self._expected is not None and self._got < self._expected:
            raise ReadFailed(
                f"{self.url}: transfer cut off after {self._got} of {self._expected} bytes "
                "(server gone or connection dropped)"
            )
        self._got += n
        return n

    def close(self) -> None:
        if not self.closed and hasattr(self, "_response"):
            self._response.close()
        super().close()


def _http_open(url: str, timeout: float):
    """The response to a GET of ``url``; "try again" statuses (:data:`RETRY_STATUSES`) are
    retried :data:`OPEN_RETRIES` times, any other failure raises at once, naming the URL."""
    for attempt in range(OPEN_RETRIES + 1):
        try:
            return urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as e:
            retry_after = e.headers.get("Retry-After") if e.headers else None
            e.close()
            if e.code in RETRY_STATUSES and attempt < OPEN_RETRIES:
                time.sleep(_retry_wait(attempt, retry_after))
                continue
            error = FileNotFoundError if e.code in (404, 410) else OSError
            tries = f" ({attempt + 1} tries)" if attempt else ""
            raise error(f"{url}: HTTP {e.code} {e.reason}{tries}") from None
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise ReadFailed(f"{url}: no answer ({reason}; timeout {timeout:g} s)") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_wait(attempt: int, retry_after: str | None) -> float:
    """Seconds before retry ``attempt + 1``: the server's Retry-After in seconds when it
    gives one, else RETRY_WAIT_S doubled per attempt; at most MAX_RETRY_WAIT_S."""
    wait = RETRY_WAIT_S * 2**attempt
    if retry_after and retry_after.strip().isdigit():
        wait = float(retry_after)
    return min(wait, MAX_RETRY_WAIT_S)


class CommandReader(io.RawIOBase):
    """A command's stdout as a stream: no byte for ``timeout`` seconds kills it and raises;
    at the end of its output a non-zero exit raises, naming the command and its stderr.
    Closing early ends the command (its whole process group)."""

    def __init__(self, args: str | list[str], url: str, timeout: float | None = None) -> None:
        super().__init__()
        self.url, self.timeout = url, read_timeout() if timeout is None else timeout
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            args,
            shell=isinstance(args, str),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            bufsize=0,
            start_new_session=True,  # so closing early ends a shell's children too
        )
        self._command = args if isinstance(args, str) else shlex.join(args)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        stdout = self._proc.stdout
        assert stdout is not None
        if len(buffer) and not select.select([stdout], [], [], self.timeout)[0]:
            self._end()
            raise ReadFailed(
                f"{self.url}: no output for {self.timeout:g} s from `{self._command}`: stalled "
                "(server gone?); killed"
            )
        n = stdout.readinto(buffer) or 0
        if n == 0 and len(buffer):
            try:
                status = self._proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self._end()
                raise ReadFailed(
                    f"{self.url}: `{self._command}` closed its output but did not exit"
                ) from None
            if status != 0:
                self._stderr.seek(0)
                err = self._stderr.read()[-500:].decode(errors="replace").strip()
                raise ReadFailed(
                    f"{self.url}: `{self._command}` exited with status {status}"
                    + (f": {err}" if err else "")
                )
        return n

    def _end(self) -> None:
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def close(self) -> None:
        if not self.closed and hasattr(self, "_proc"):
            self._end()
            if self._proc.stdout:
                self._proc.stdout.close()
            self._stderr.close()
        super().close()


def _open_http(url: str, mode: str = "rb", bufsize: int = 8192, **kw) -> IO[bytes]:
    if mode[0] != "r":
        return _ORIGINAL[urllib.parse.urlparse(url).scheme](url, mode, bufsize, **kw)
    return HttpReader(url)  # type: ignore[return-value]


def _open_pipe(url: str, mode: str = "rb", bufsize: int = 8192, **kw) -> IO[bytes]:
    if mode[0] != "r":
        return _ORIGINAL["pipe"](url, mode, bufsize, **kw)
    if wds_gopen.utils.enforce_security:
        raise InputError(f"{url}: pipe: URLs are disabled (WDS_SECURE=1)")
    return CommandReader(url[len("pipe:") :], url)  # type: ignore[return-value]


def _open_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw) -> IO[bytes]:
    if mode[0] != "r":
        raise InputError(f"{url}: writing to s3 is not supported here")
    try:
        return CommandReader(["aws", "s3", "cp", "--quiet", url, "-"], url)  # type: ignore[return-value]
    except FileNotFoundError:
        raise ReadFailed(
            f"{url}: s3:// URLs are read with the `aws` command, which is not installed here "
            "(or use an https:// URL of the bucket, or pipe:...)"
        ) from None


def register_openers() -> None:
    """Put the bounded-time readers for http, https and pipe (and s3, which webdataset
    1.0.2 cannot open) into webdataset's ``gopen_schemes``; idempotent. Runs at import."""
    schemes = wds_gopen.gopen_schemes
    schemes["http"] = schemes["https"] = _open_http
    schemes["pipe"] = _open_pipe
    schemes.setdefault("s3", _open_s3)


register_openers()


def open_url(url: str) -> IO[bytes]:
    """``url`` (a path or any URL webdataset opens) for reading, through webdataset's
    ``gopen`` with the openers above."""
    return wds.gopen(url, "rb")


def read_bytes(url: str) -> bytes:
    with open_url(url) as stream:
        return stream.read()


def is_url(location: str | Path) -> bool:
    """A URL (``pipe:``, ``https://``, ``s3://``, ``file://``...) rather than a local path
    (which may hold a colon)."""
    if isinstance(location, Path):
        return False
    return location.startswith("pipe:") or bool(_SCHEME.match(location))


def _path_part(location: str) -> str:
    """What decides a location's kind: the command of a pipe:, else the URL's path."""
    if location.startswith("pipe:"):
        return location
    return urllib.parse.urlparse(location).path if is_url(location) else location


def is_pattern(location: str | Path) -> bool:
    """A shard URL or brace pattern (``...shard-{000000..000009}.tar``), not a manifest
    or folder."""
    text = str(location)
    if text.startswith("pipe:"):
        return not re.search(r"\.json\b", text)
    path = _path_part(text)
    return "{" in path or bool(_TAR.search(path))


def _dir_of(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def join(base: str, name: str) -> str:
    """Shard ``name`` from a manifest at URL or path ``base``: absolute URLs and paths as
    they are, relative names next to the manifest."""
    if is_url(name):
        return name
    if not is_url(base):
        return str(Path(base).parent / name)
    if base.startswith("pipe:"):
        if name.startswith("/"):
            return name
        raise InputError(
            f"{base}: a manifest read through pipe: lists relative shard names ({name!r}), "
            "which cannot be resolved against a command: point data.shards at the manifest's "
            "URL (https://, s3://, file://) or at a shard pattern instead"
        )
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme in urllib.parse.uses_relative:
        return urllib.parse.urljoin(base, name)
    if name.startswith("/"):  # s3://bucket/key, gs://...
        return f"{parsed.scheme}://{parsed.netloc}{name}"
    return f"{_dir_of(base)}/{name}"


def _load_manifest(url: str) -> dict:
    try:
        manifest = json.loads(read_bytes(url))
    except ValueError as e:
        raise InputError(f"{url} is not a shard manifest (not JSON: {e})") from None
    if not isinstance(manifest, dict) or not {"shards", "kind"} <= manifest.keys():
        raise InputError(f"{url} is not a shard manifest (no shards and kind)")
    return manifest


def _from_manifest(url: str) -> dict:
    manifest = _load_manifest(url)
    manifest["urls"] = [join(url, s["name"]) for s in manifest["shards"]]
    manifest["location"] = url
    return manifest


def _probe(urls: list[str], location: str) -> dict:
    """Kind and size from the first readable sample of the first few shards."""
    errors: list[str] = []

    def note(exn: BaseException) -> bool:
        errors.append(str(exn))
        return True

    probe = wds.DataPipeline(
        wds.SimpleShardList(urls[:KIND_PROBE_SHARDS]), wds.tarfile_to_samples(handler=note)
    )
    for record in probe:
        kind = "artifact" if any(k.startswith("composite.") for k in record) else "clean"
        try:
            target = decode_sample(record, kind, as_uint8=True)["target"]
        except ValueError as e:
            errors.append(str(e))
            continue
        return {"kind": kind, "size": int(target.shape[-1])}
    raise ReadFailed(
        f"{location}: no readable sample in the first {min(len(urls), KIND_PROBE_SHARDS)} "
        f"shard(s) of the pattern: {'; '.join(errors[:3]) or 'they are empty'}"
    )


def _from_pattern(location: str) -> dict:
    urls = list(wds.shardlists.expand_urls(location))
    if not urls:
        raise InputError(f"{location}: the pattern names no shard")
    beside = _manifest_beside(urls)
    if beside is not None:
        return beside
    names = [u.rsplit("/", 1)[-1] for u in urls]
    return {
        **_probe(urls, location),
        "num_shards": len(urls),
        "num_samples": None,  # unknown without a manifest (see require_counts)
        "shards": [{"name": n, "samples": None, "bytes": None, "sha256": None} for n in names],
        "skipped": [],
        "urls": urls,
        "location": location,
    }


def _manifest_beside(urls: list[str]) -> dict | None:
    """The manifest in the pattern's directory, restricted to the pattern's shards, when
    there is one listing every one of them (never for pipe: commands)."""
    if any(u.startswith("pipe:") for u in urls) or len({_dir_of(u) for u in urls}) != 1:
        return None
    url = f"{_dir_of(urls[0])}/{MANIFEST}"
    try:
        manifest = _load_manifest(url)
    except (OSError, ValueError):
        return None
    by_name = {s["name"]: s for s in manifest["shards"]}
    names = [u.rsplit("/", 1)[-1] for u in urls]
    if not all(n in by_name for n in names):
        return None
    manifest["shards"] = [by_name[n] for n in names]
    manifest["num_shards"] = len(urls)
    manifest["num_samples"] = sum(s["samples"] for s in manifest["shards"])
    manifest["urls"], manifest["location"] = urls, url
    return manifest


def manifest_url(location: str) -> str:
    """The manifest a non-pattern URL names: itself, or ``manifest.json`` in a directory
    URL."""
    if location.startswith("pipe:") or _path_part(location).endswith(".json"):
        return location
    return location.rstrip("/") + "/" + MANIFEST


def resolve(location: str | Path) -> dict:
    """The manifest of ``location`` (see the module docstring) with ``urls`` (one per shard,
    in manifest order, openable by webdataset) and ``location`` (the manifest's URL or
    path, or the pattern) added. For a bare pattern ``num_samples`` and each shard's
    ``samples``, ``bytes`` and ``sha256`` are ``None``."""
    text = str(location)
    if is_pattern(text):
        return _from_pattern(text)
    if is_url(text):
        return _from_manifest(manifest_url(text))
    path = Path(location)
    if path.suffix == ".json":
        if not path.is_file():
            raise MissingFileError(f"{path} not found")
        return _from_manifest(str(path))
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise MissingFileError(
            f"{manifest_path} not found: build the shards with `pixperfect shards build --out "
            f"{location}` (an interrupted build writes the manifest when rerun to completion)"
        )
    return _from_manifest(str(manifest_path))


def require_counts(manifest: dict, need: str) -> None:
    """Refuse what needs sample counts (``need`` says what) on a pattern without manifest."""
    if manifest.get("num_samples") is None:
        raise InputError(
            f"{need} needs the shards' sample counts, which only a manifest gives, but "
            f"data.shards={manifest.get('location')} is a shard pattern with no manifest.json "
            "beside it: point data.shards at the manifest's URL instead (e.g. "
            "https://host/path/manifest.json), or set data.resample=true"
        )
