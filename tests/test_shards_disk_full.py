"""A full disk while building shards: one clear error, no partial shard taken as complete,
and a rerun after freeing space finishes the build to the bytes of an uninterrupted one.

Two ways to fill the disk: a real tmpfs too small for the build, mounted in a private mount
namespace (``unshare``; skipped where mounting is impossible, a failure under ``CI=true``),
and an injected ``OSError(ENOSPC)`` from the build's writes, which runs everywhere (in this
process, and in the worker processes of ``--workers 2``).
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from helpers import manifest_of

from pixperfect import atomic as atomic_module
from pixperfect.cli import main
from pixperfect.shards import tasks as tasks_module
from pixperfect.shards import writing as writing_module
from pixperfect.shards.build import shard_name

# A failed shard must not leave tarfile's stream to write its buffer when collected.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
BUDGET = "PIXPERFECT_TEST_DISK_BYTES"  # a worker's disk size, for the worker processes


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four small real photos (scikit-image's), 96x72 PNGs."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = cv2.resize(getattr(data, name)(), (96, 72), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}.png"), image[:, :, ::-1])
    return folder


def _args(photos: Path) -> list[str]:
    """4 photos x 2 crops of 32 px, 2 samples per shard: 4 artifact shards of 30 KiB."""
    return [
        "shards", "build", "--images", str(photos), "--size", "32", "--crops-per-image", "2",
        "--shard-size", "2", "--seed", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """The same build, uninterrupted, on the normal disk."""
    out = tmp_path_factory.mktemp("reference")
    assert main([*_args(photos), "--out", str(out)]) == 0
    return out


def _check_unfinished(folder: Path, reference: Path) -> int:
    """After a failed build: no .partial file, no manifest, every tar with its sidecar and
    every sidecar with its tar, each such shard the reference's bytes; returns their count."""
    names = {p.name for p in folder.iterdir()}
    assert not [n for n in names if n.endswith(".partial")], names
    assert "manifest.json" not in names
    tars = {n.removesuffix(".tar") for n in names if re.fullmatch(r"shard-\d+\.tar", n)}
    sidecars = {n.removesuffix(".json") for n in names if re.fullmatch(r"shard-\d+\.json", n)}
    assert tars == sidecars, names
    expected = {s["name"]: s for s in manifest_of(reference)["shards"]}
    for stem in tars:
        record = json.loads((folder / f"{stem}.json").read_text())
        data = (folder / f"{stem}.tar").read_bytes()
        assert len(data) == record["bytes"] == expected[f"{stem}.tar"]["bytes"]
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        assert record["sha256"] == expected[f"{stem}.tar"]["sha256"]
    return len(tars)


def _size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def _check_message(
    message: str, folder: Path, reference: Path, complete: int, shown: Path | None = None
) -> None:
    """The folder (``shown``, default ``folder``), what was being written, the room needed (not
    less than the missing shards of the reference take), the room free, and that a rerun
    resumes."""
    size = r"([\d.]+ (?:bytes|KiB|MiB|GiB))"
    pattern = (
        rf"{re.escape(str(shown or folder))}: no space left on device while writing (\S+): "
        rf"the (\d+) shard\(s\) still to build need about {size}, {size} is free there; "
        rf"(?:free at least {size} more|free more space), then rerun the same command: it "
        r"keeps the (\d+) complete shard\(s\) and resumes the build"
    )
    match = re.fullmatch(pattern, message)
    assert match, message
    assert int(match[2]) == 4 - complete and int(match[6]) == complete
    if match[5]:  # the room short, when the free room is less than the room needed
        short = _size(match[3]) - _size(match[4])
        assert _size(match[5]) == pytest.approx(short, rel=0.05, abs=200)
    missing = [s for s in manifest_of(reference)["shards"] if not (folder / s["name"]).exists()]
    assert _size(match[3]) >= sum(s["bytes"] for s in missing)
    assert re.fullmatch(r"shard-\d{6}\.(tar|json)", match[1])


def _one_error_line(err: str) -> str:
    """The error of a failed CLI run: one line on stderr (besides the progress bar), no
    traceback; returns its message."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    prefix = "pixperfect shards: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


# --- an injected full disk -------------------------------------------------------------------


class _Disk:
    """``open`` for the build module with a disk of ``budget`` bytes (counted per process,
    never freed): a write past it, or any write to a file named like ``full_for``, raises
    ``OSError(ENOSPC)`` as a full disk does."""

    def __init__(self, budget: float = math.inf, full_for: str | None = None):
        self.left, self.full_for = budget, full_for

    def open(self, file, mode="r", *args, **kwargs):
        stream = builtins.open(file, mode, *args, **kwargs)
        return _Writes(stream, self, Path(file).name) if set(mode) & set("wax+") else stream


class _Writes:
    def __init__(self, stream, disk: _Disk, name: str):
        self._stream, self._disk, self._name = stream, disk, name

    def write(self, data) -> int:
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        full_for = self._disk.full_for
        if size > self._disk.left or (full_for and fnmatch.fnmatch(self._name, full_for)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.left -= size
        return self._stream.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._stream.close()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _install(monkeypatch, disk: _Disk) -> None:
    """Every write of the build through ``disk``: the shards (shards.writing) and the
    sidecars, plan and manifest (pixperfect.atomic)."""
    for module in (writing_module, atomic_module):
        monkeypatch.setattr(module, "open", disk.open, raising=False)


def _worker_init_on_a_small_disk(job=None) -> None:
    """The pool's initializer, in each worker process: as usual, then a small disk."""
    tasks_module._worker_init(job)
    disk = _Disk(int(os.environ[BUDGET]))
    writing_module.open = atomic_module.open = disk.open  # the shards; sidecars and manifest


def test_enospc_in_a_shard_stops_the_cli_with_one_line_and_a_rerun_finishes_the_build(
    photos, reference, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    sizes = {p.name: p.stat().st_size for p in reference.iterdir()}
    two_shards = sum(sizes[f"shard-00000{i}.{ext}"] for i in (0, 1) for ext in ("tar", "json"))
    budget = sizes["plan.json"] + two_shards + sizes[shard_name(2)] // 2  # fails in shard 2
    _install(monkeypatch, _Disk(budget))
    code, _, err = _build(photos, out, capsys)
    assert code == 1
    message = _one_error_line(err)
    assert "while writing shard-000002.tar" in message
    assert _check_unfinished(out, reference) == 2
    _check_message(message, out, reference, complete=2)
    monkeypatch.undo()  # space freed
    # What a build killed while writing would leave: the rerun removes it.
    (out / f"{shard_name(3)}.partial").write_bytes(b"half a tar")
    (out / "shard-000003.json.99999.partial").write_text('{"half": ')
    code, stdout, _ = _build(photos, out, capsys)
    assert code == 0 and "built 2 shard(s) (4 samples)" in stdout and "kept 2 complete" in stdout
    assert not list(out.glob("*.partial"))
    assert manifest_of(out) == manifest_of(reference)


def _build(photos: Path, out: Path, capsys, *options: str) -> tuple[int, str, str]:
    """The CLI's ``shards build``: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([*_args(photos), "--out", str(out), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("full_for", ["shard-000001.json.*", "manifest.json.*"])
def test_enospc_in_a_sidecar_or_the_manifest_leaves_no_shard_or_manifest_taken_as_complete(
    full_for, photos, reference, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    _install(monkeypatch, _Disk(full_for=full_for))
    code, _, err = _build(photos, out, capsys)
    assert code == 1
    message = _one_error_line(err)
    complete = _check_unfinished(out, reference)
    if full_for.startswith("shard"):
        # The tar was renamed before its sidecar failed: removed again, so not complete.
        assert complete == 1 and not (out / shard_name(1)).exists()
        _check_message(message, out, reference, complete)
        assert "while writing shard-000001.json" in message
    else:
        assert complete == 4
        assert "while writing manifest.json: every shard is complete, the manifest needs" in (
            message
        )
    monkeypatch.undo()  # space freed
    code, stdout, _ = _build(photos, out, capsys)
    assert code == 0 and f"built {4 - complete} shard(s)" in stdout
    assert f"kept {complete} complete" in stdout
    assert manifest_of(out) == manifest_of(reference)


def test_enospc_in_a_worker_process_surfaces_as_the_same_error_and_the_pool_ends(
    photos, reference, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    sizes = {p.name: p.stat().st_size for p in reference.iterdir()}
    one_shard = sizes[shard_name(0)] + sizes["shard-000000.json"]
    monkeypatch.setenv(BUDGET, str(one_shard + sizes[shard_name(0)] // 2))  # per worker
    monkeypatch.setattr(tasks_module, "_worker_init", _worker_init_on_a_small_disk)
    code, _, err = _build(photos, out, capsys, "--workers", "2")
    assert code == 1
    # Each worker built at most one shard; the pool is gone, no .partial file is left.
    complete = _check_unfinished(out, reference)
    assert 1 <= complete <= 2
    _check_message(_one_error_line(err), out, reference, complete)
    monkeypatch.undo()
    code, stdout, _ = _build(photos, out, capsys, "--workers", "2")
    assert code == 0 and f"kept {complete} complete" in stdout
    assert manifest_of(out) == manifest_of(reference)


# --- a real full disk: a small tmpfs in a private mount namespace ----------------------------


def _namespace(probe_dir: Path) -> list[str] | None:
    """The command prefix that runs a shell in a private mount namespace where a tmpfs can be
    mounted (as root, else in a user namespace), or None where mounting is impossible."""
    if sys.platform != "linux" or not shutil.which("unshare"):
        return None
    prefixes = [["unshare", "-rm"]]
    if os.geteuid() == 0:
        prefixes.insert(0, ["unshare", "--mount", "--propagation", "private"])
    probe = f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(probe_dir))}"
    for prefix in prefixes:
        result = subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, timeout=30)
        if result.returncode == 0:
            return prefix
    return None


def test_a_full_tmpfs_stops_the_cli_with_one_line_and_a_rerun_after_remounting_bigger_finishes(
    photos, reference, tmp_path
):
    mount = tmp_path / "mnt"
    mount.mkdir()
    prefix = _namespace(mount)
    if prefix is None:
        message = "cannot mount a tmpfs here (needs Linux, unshare, and root or user namespaces)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Room for the plan and two shards with their sidecars (tmpfs counts whole pages), and
    # less than one more shard: the build fails in its third shard (whichever it is, with two
    # workers).
    page = os.sysconf("SC_PAGE_SIZE")
    sizes = {p.name: p.stat().st_size for p in reference.iterdir()}
    pages = math.ceil(sizes["plan.json"] / page) + sum(
        math.ceil(sizes[f"shard-00000{i}.{ext}"] / page) for i in (0, 1) for ext in ("tar", "json")
    )
    pages += math.ceil(sizes[shard_name(2)] / page) // 2
    out = mount / "out"
    cli = shlex.join([sys.executable, "-m", "pixperfect.cli", *_args(photos), "--out", str(out)])
    host = shlex.quote(str(tmp_path))
    script = f"""
        mount -t tmpfs -o size={pages * page} tmpfs {shlex.quote(str(mount))} || exit 90
        {cli} --workers 2 >{host}/fail.out 2>{host}/fail.err
        echo $? >{host}/fail.rc
        cp -a {shlex.quote(str(out))} {host}/failed
        mount -o remount,size=4m {shlex.quote(str(mount))} || exit 91
        {cli} >{host}/rerun.out 2>{host}/rerun.err
        echo $? >{host}/rerun.rc
        cp {shlex.quote(str(out))}/manifest.json {host}/manifest.json
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*prefix, "sh", "-c", script], env=env, timeout=300)
    assert done.returncode == 0, "the namespace's script failed"
    assert not list(mount.iterdir()), "the tmpfs leaked out of its mount namespace"

    assert (tmp_path / "fail.rc").read_text().strip() == "1"
    message = _one_error_line((tmp_path / "fail.err").read_text())
    complete = _check_unfinished(tmp_path / "failed", reference)
    assert 1 <= complete < 4
    _check_message(message, tmp_path / "failed", reference, complete, shown=out)
    free = re.search(r"([\d.]+ \w+) is free there", message)[1]
    assert _size(free) < sizes[shard_name(0)]

    rerun = (tmp_path / "rerun.out").read_text()
    assert (tmp_path / "rerun.rc").read_text().strip() == "0", (tmp_path / "rerun.err").read_text()
    assert f"built {4 - complete} shard(s)" in rerun and f"kept {complete} complete" in rerun
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest_of(reference)
