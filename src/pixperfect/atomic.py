"""Files that are whole or absent: write to a temporary name, fsync, rename over the real
name, fsync the folder. A kill or a full disk mid-write then never leaves a truncated file
under a name a reader trusts (shards, their sidecars and manifest, checkpoints)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

FULL = (errno.ENOSPC, errno.EDQUOT)  # the errors that mean "no room": freeing space fixes them


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable. Best effort where folders cannot be opened or
    synced (some file systems), except a full disk, which the caller must hear about."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in FULL:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, temp: Path) -> Iterator[IO[bytes]]:
    """``temp`` open for writing; when the block ends, fsynced and renamed over ``path`` (then
    the folder fsynced). On any failure ``temp`` is removed and ``path`` is untouched."""
    try:
        with open(temp, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
