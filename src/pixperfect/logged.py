"""Steps of long documented jobs (the loss ablation, ``make reference``): run one command
with its output appended to a log file, timed, and stop the job with the log's tail when
it fails."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path


def run_logged(command: list[str], log: Path, cwd: Path) -> float:
    """Run ``command`` in ``cwd`` with its output appended to ``log``; wall seconds. Exits
    on failure, printing the command and the last 30 lines of the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        start = time.perf_counter()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        sys.exit(f"command failed ({code}): {shlex.join(command)}\n--- {log} (tail) ---\n{tail}")
    return seconds
