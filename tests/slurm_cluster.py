"""A real local SLURM cluster for tests (``slurm/local_cluster.sh``), plus job helpers.

Use it from a test module::

    from slurm_cluster import slurm_cluster_fixture, submit, wait_for  # noqa: F401

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        job = submit(script, "arg", options=["--array=0-1", f"--output={tmp_path}/%A_%a.log"])
        assert wait_for(job, timeout=120) == "COMPLETED"

``slurm_cluster`` (session scope) brings the two-node cluster up (installing slurm-wlm and
munge with apt on first use, about 20 s) and takes it down at session end, but only if it
brought it up; a cluster already up is used and left up. Where the cluster cannot be had (not
root, no apt, daemons fail) the test is skipped with the reason, or fails under ``CI=true``.

Accounting is off on that cluster (no slurmdbd), so ``sacct`` does not work there;
``wait_for`` uses it where it works and otherwise ``scontrol show job``, which keeps finished
jobs for ``MinJobAge`` (an hour on the local cluster).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "slurm" / "local_cluster.sh"
STATE = Path(os.environ.get("PIXPERFECT_SLURM_STATE", "/tmp/pixperfect-slurm"))

# States a job never leaves (REQUEUED/PREEMPTED jobs may come back; see FINAL_OR_REQUEUE).
FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


@dataclass
class Cluster:
    state_dir: Path  # logs of the daemons are under state_dir / "log"
    started_here: bool


def _unavailable(reason: str) -> None:
    """Skip (developer machine) or fail (CI=true, where the cluster must work)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"SLURM cluster unavailable under CI=true: {reason}")
    pytest.skip(f"SLURM cluster unavailable: {reason}")


def _cluster(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture():
    """The local two-node cluster (n1, n2; partition ``debug``), up for the session."""
    if os.geteuid() != 0:
        _unavailable("the local cluster needs root (it runs the SLURM daemons)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        _unavailable("SLURM is not installed and apt-get is not available to install it")
    was_up = shutil.which("sinfo") is not None and _cluster("status", 30).stdout.strip() != "down"
    try:
        # The first `up` on a machine installs the packages (apt), hence the long timeout.
        up = _cluster("up", 900)
    except subprocess.TimeoutExpired:
        _unavailable("slurm/local_cluster.sh up timed out")
    if up.returncode != 0:
        _unavailable(f"slurm/local_cluster.sh up failed:\n{(up.stdout + up.stderr)[-3000:]}")
    yield Cluster(STATE, started_here=not was_up)
    if not was_up:
        down = _cluster("down", 120)
        if down.returncode != 0:
            raise RuntimeError(f"slurm/local_cluster.sh down failed:\n{down.stderr[-3000:]}")


def submit(
    script: str | Path,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
    cwd: str | Path = ROOT,
) -> str:
    """``sbatch --parsable [options] script args...``; returns the job id (array: its id).

    ``env`` is added to this process's environment (sbatch passes the environment to the job);
    ``cwd`` is the submit directory (``SLURM_SUBMIT_DIR``, the job's working directory).
    """
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        ["sbatch", "--parsable", *options, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sbatch failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"


def _parse_scontrol(text: str) -> list[dict[str, str]]:
    """``scontrol -o show job`` output: one record (``Key=value`` pairs) per line."""
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip()]


def job_records(job_id: str) -> list[dict[str, str]]:
    """``scontrol show job`` records: one per job, one per array element (pending ones may
    still be a single record with ``ArrayTaskId=0-3``)."""
    result = subprocess.run(
        ["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        raise RuntimeError(f"scontrol show job {job_id}: {result.stderr.strip()}")
    return _parse_scontrol(result.stdout)


def _key(record: Mapping[str, str]) -> str:
    if record.get("ArrayJobId") and record.get("ArrayTaskId"):
        return f"{record['ArrayJobId']}_{record['ArrayTaskId']}"
    return record["JobId"]


_sacct_works: bool | None = None


def _sacct_states(job_id: str) -> dict[str, str] | None:
    """States from sacct, or None where accounting is off (the local cluster)."""
    global _sacct_works
    if _sacct_works is False or shutil.which("sacct") is None:
        return None
    result = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", "JobID,State"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:  # "Slurm accounting storage is disabled"
        _sacct_works = False
        return None
    _sacct_works = True
    states = {}
    for line in result.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            states[jid] = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return states


def job_states(job_id: str) -> dict[str, str]:
    """``{"<id>" or "<array id>_<task>": state}`` for a job or every element of an array."""
    states = _sacct_states(job_id)
    if states:
        return states
    return {_key(r): r["JobState"] for r in job_records(job_id)}


def _is_final(states: Mapping[str, str]) -> bool:
    # A pending array meta record ("12_[0-3]" / ArrayTaskId=0-3) is not final.
    return bool(states) and all(
        s in FINAL and not re.search(r"[\[\-,]", k.split("_", 1)[-1]) for k, s in states.items()
    )


def wait_for(job_id: str, timeout: float = 300, poll: float = 1.0) -> str:
    """Wait until the job (every element, for an array) is in a final state.

    Returns the final state: that state when all elements agree (``"COMPLETED"``), otherwise
    the first one that is not COMPLETED; raises TimeoutError with the states so far.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(job_id)
        if _is_final(states):
            failed = [s for s in states.values() if s != "COMPLETED"]
            return failed[0] if failed else "COMPLETED"
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout}s: {states}")
        time.sleep(poll)


def start_now(job_id: str) -> None:
    """Make a pending (e.g. requeued, reason BeginTime) job eligible at once."""
    subprocess.run(
        ["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30
    )
