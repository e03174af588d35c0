"""Checkpoints that survive a kill: atomic saves, and a resume that skips damaged files.

Saving (:class:`AtomicCheckpointIO`, a Lightning CheckpointIO plugin, so it covers every
save the Trainer makes: ModelCheckpoint's ``step=N.ckpt``, ``last.ckpt`` and the preemption
``hpc_ckpt_N.ckpt``): the checkpoint is written to ``.<name>.<pid>.tmp`` in the same folder,
flushed and fsynced, then renamed over the real name (``os.replace``, atomic on one file
system) and the folder is fsynced. A kill during a save leaves the previous file under the
real name, complete, and at worst a temp file that no resume glob matches
(:data:`PARTIAL_GLOB`; the next launch removes it: :func:`remove_partial_saves`).
Lightning's own save writes to a temp file in the system temp folder and *moves* it, which
across file systems (a shared run folder) is a copy into the real name: not atomic.

Loading (:func:`checkpoint_problem`): a ``torch.save`` file is a zip archive. A cheap but
real check opens it, verifies every member's CRC (``testzip``: catches truncation and
corruption), then loads it memory-mapped on the CPU (no tensor data read) and checks it holds
``state_dict`` and ``global_step``.

What a checkpoint records beyond Lightning's own keys: ``data_provenance``
(:data:`DATA_PROVENANCE_KEY`), the data the run read: where (a local path or a remote
URL), its kind and recipe hash (:func:`pixperfect.shards.match.data_provenance`).
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from pixperfect.atomic import atomic_file

log = logging.getLogger(__name__)

DATA_PROVENANCE_KEY = "data_provenance"  # the run's data (pixperfect.shards.match)
PARTIAL_GLOB = ".*.tmp"  # temp names of saves in progress (or killed); see _temp_path
REQUIRED_KEYS = ("state_dict", "global_step")


def _temp_path(path: Path) -> Path:
    # Hidden, and ends in .tmp: matches none of step=*.ckpt, last.ckpt, hpc_ckpt_*.ckpt.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temp file beside the target, fsync, ``os.replace``: a checkpoint
    under a real name is always complete. Remote (fsspec URL) paths go to Lightning's save."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, _temp_path(path)) as f:
            self.write(checkpoint, f)

    def write(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        """Serialise ``checkpoint`` into the open temp file (a hook for tests)."""
        torch.save(checkpoint, file)


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from, or None if it loads and holds a training state."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            return f"corrupt archive member {bad} (CRC mismatch)"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"not a complete checkpoint archive ({type(e).__name__}: {e})"
    try:
        checkpoint = torch.load(path, mmap=True, map_location="cpu", weights_only=False)
    except Exception as e:  # any failure to load is the answer
        return f"does not load ({type(e).__name__}: {e})"
    if not isinstance(checkpoint, dict):
        return f"holds a {type(checkpoint).__name__}, not a training checkpoint"
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    del checkpoint
    return f"has no {', '.join(missing)}" if missing else None


def remove_partial_saves(*directories: Path) -> list[Path]:
    """Delete temp files of saves that were killed (one writer: call on global rank 0 before
    training starts); returns them."""
    removed = []
    for directory in directories:
        for tmp in sorted(directory.glob(PARTIAL_GLOB)):
            if tmp.is_file() and ".ckpt." in tmp.name:  # PARTIAL_GLOB: ends in .tmp
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    if removed:
        log.warning(
            "removed %d partial checkpoint save(s) of a killed launch: %s",
            len(removed),
            ", ".join(map(str, removed)),
        )
    return removed


# The resume check once per node --------------------------------------------------------
# Every rank of a launch must pick the same checkpoint, and checking one CRC-reads the whole
# file (0.6 GB for the paper's model) from the shared file system. On each node only local
# rank 0 checks; it leaves its answer in the run folder under a name of this launch on this
# node (:func:`node_launch_key`) and the node's other ranks read it (:func:`shared_answer`).

LAUNCH_ENV = "PIXPERFECT_LAUNCH"  # set by a launch for the DDP ranks Lightning starts
ANSWER_GLOB = ".resume-check.*.json"
WAIT_POLL_S = 0.2


def local_rank(env: dict[str, str]) -> int:
    """This process's rank on its node: SLURM's inside ``srun``, else torchrun's/Lightning's
    ``LOCAL_RANK``, else 0."""
    if env.get("SLURM_STEP_ID") is not None and env.get("SLURM_LOCALID"):
        return int(env["SLURM_LOCALID"])
    return int(env.get("LOCAL_RANK", "0") or 0)


def node_launch_key(env: dict[str, str]) -> str | None:
    """A name shared by the ranks of this launch on this node, and by no other launch; None
    when the launcher gives none (then every rank checks for itself)."""
    import socket

    host = socket.gethostname()
    if (job := env.get("SLURM_JOB_ID")) and env.get("SLURM_STEP_ID") is not None:
        restart = env.get("SLURM_RESTART_COUNT", "0")
        return f"slurm-{job}.{env['SLURM_STEP_ID']}.{restart}-{host}"
    if run := env.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun-{run}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}-{host}"
    if launch := env.get(LAUNCH_ENV):
        return f"local-{launch}-{host}"
    return None


def answer_path(directory: Path, key: str) -> Path:
    return directory / f".resume-check.{key}.json"


def publish_answer(directory: Path, key: str, answer: Path | None) -> None:
    """Local rank 0: the checkpoint this launch resumes from (None: a new run), for the
    node's other ranks; written whole or not at all."""
    import json

    path = answer_path(directory, key)
    temp = path.with_name(f"{path.name}.{os.getpid()}.part")
    temp.write_text(json.dumps({"resume": None if answer is None else str(answer)}))
    os.replace(temp, path)


def shared_answer(directory: Path, key: str, timeout_s: float) -> tuple[bool, Path | None]:
    """A rank other than its node's first: wait up to ``timeout_s`` for local rank 0's
    answer; ``(found, checkpoint or None)``. Not found: the caller checks for itself."""
    import json
    import time

    path, deadline = answer_path(directory, key), time.monotonic() + timeout_s
    while True:
        try:
            resume = json.loads(path.read_text())["resume"]
            return True, None if resume is None else Path(resume)
        except (OSError, ValueError, KeyError):
            if time.monotonic() >= deadline:
                log.warning("no resume answer from local rank 0 in %s s (%s)", timeout_s, path)
                return False, None
            time.sleep(WAIT_POLL_S)


def remove_answer(directory: Path, env: dict[str, str]) -> None:
    """Local rank 0, once every rank has joined (all have read the answer): remove it."""
    key = node_launch_key(env)
    if key is not None and local_rank(env) == 0:
        answer_path(directory, key).unlink(missing_ok=True)
