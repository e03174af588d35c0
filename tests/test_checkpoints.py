"""Checkpoints survive kills: every save is atomic (training/checkpoints.py: AtomicCheckpointIO),
and a resume skips a checkpoint that does not load (training/run_folder.py: resume_checkpoint)."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch
from conftest import ROOT, TINY
from helpers import logged_steps
from lightning.pytorch.strategies import DDPStrategy

from pixperfect.training.checkpoints import AtomicCheckpointIO, checkpoint_problem
from pixperfect.training.run_folder import resume_checkpoint
from pixperfect.training.train import build_trainer, train


def _keeping_mtime(path: Path, damage) -> None:
    """Damage ``path`` as a disk or a killed copy would, without making it newer."""
    st = path.stat()
    damage(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_a_byte_of_the_largest_record(path: Path) -> None:
    """One byte inside a tensor's data flipped: the file keeps its size and structure."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len + info.compress_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_the_trainer_saves_through_the_atomic_plugin_and_auto_ddp_gets_ddp_timeout_s(tiny_config):
    cfg = tiny_config("trainer.devices=2", "trainer.ddp_timeout_s=15")
    trainer = build_trainer(cfg, Path(cfg.run.root) / cfg.run.name)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # strategy=auto with two processes is DDP, with the configured collective timeout.
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._timeout.total_seconds() == 15


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_and_the_run_resumes_from_the_next(
    tiny_config, caplog
):
    directory = train(tiny_config("trainer.max_steps=4", "trainer.ckpt_every_n_steps=2"))
    checkpoints = directory / "checkpoints"
    last, step4, step2 = (checkpoints / n for n in ("last.ckpt", "step=4.ckpt", "step=2.ckpt"))
    assert resume_checkpoint(directory) == last  # newest: written at the end of the fit
    _keeping_mtime(last, _truncate_to_half)  # a save cut off half way (no atomic rename)
    _keeping_mtime(step4, _flip_a_byte_of_the_largest_record)  # bit rot: same size

    with caplog.at_level(logging.INFO, logger="pixperfect"):
        train(tiny_config("trainer.max_steps=6", "trainer.ckpt_every_n_steps=2"))
    said = caplog.text
    assert f"skipping checkpoint {last}: not a complete checkpoint archive" in said, said
    assert f"skipping checkpoint {step4}: corrupt archive member" in said, said
    assert f"rank 0 resuming from {step2}" in said, said

    # The step count went on from step 2, the newest checkpoint that loads.
    assert torch.load(last, weights_only=False)["global_step"] == 6
    files = sorted((directory / "tb").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert [logged_steps(f) for f in files] == [[0, 1, 2, 3], [2, 3, 4, 5]]


def test_a_run_whose_checkpoints_all_fail_to_load_starts_from_step_0_with_a_warning(
    tiny_config, caplog
):
    cfg = tiny_config()
    directory = Path(cfg.run.root) / cfg.run.name
    (directory / "checkpoints").mkdir(parents=True)
    (directory / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    (directory / "checkpoints" / "step=250.ckpt").write_bytes(b"")
    torch.save({"state_dict": {}}, directory / "hpc_ckpt_1.ckpt")  # loads, holds no step
    with caplog.at_level(logging.WARNING, logger="pixperfect"):
        assert resume_checkpoint(directory) is None
    said = caplog.text
    assert f"skipping checkpoint {directory / 'hpc_ckpt_1.ckpt'}: has no global_step" in said
    assert "no loadable checkpoint" in said and "starting from step 0" in said, said

    train(cfg)  # never a crash: a new run
    last = directory / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2


# Runs `train` in a child whose plugin writes half of last.ckpt's bytes to the temp file,
# says so in the ready file, and waits there to be killed.
_PAUSED_SAVE = """
import io, os, sys, time
from pathlib import Path
from pixperfect.config import load_config
from pixperfect.training import checkpoints
from pixperfect.training.train import train

ready, config, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
write = checkpoints.AtomicCheckpointIO.write

def paused(self, checkpoint, file):
    if not Path(file.name).name.startswith(".last.ckpt."):
        return write(self, checkpoint, file)
    buffer = io.BytesIO()
    write(self, checkpoint, buffer)
    data = buffer.getvalue()
    file.write(data[: len(data) // 2])
    file.flush()
    os.fsync(file.fileno())
    ready.write_text(file.name)
    time.sleep(600)

checkpoints.AtomicCheckpointIO.write = paused
train(load_config(config, overrides))
"""


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_intact_and_loadable(
    tiny_config, tmp_path
):
    directory = train(tiny_config("trainer.max_steps=2"))
    last = directory / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    ready, log = tmp_path / "ready", tmp_path / "child.log"
    command = [sys.executable, "-c", _PAUSED_SAVE, str(ready), str(ROOT / "configs" / "demo.yaml")]
    overrides = [*TINY, f"run.root={tmp_path}", "trainer.max_steps=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        child = subprocess.Popen(
            [*command, *overrides], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)  # half of the new last.ckpt is on disk
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)

    # The real name still holds the previous checkpoint, whole; the half-written file is the
    # temp one, newer, and no resume picks it.
    partial = Path(ready.read_text())
    assert partial.parent == last.parent and partial.name.startswith(".last.ckpt.")
    assert 0 < partial.stat().st_size and checkpoint_problem(partial) is not None
    assert last.read_bytes() == before and checkpoint_problem(last) is None
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert partial.stat().st_mtime_ns > last.stat().st_mtime_ns
    assert resume_checkpoint(directory) == last

    # The next launch resumes from it and clears the leftover.
    train(tiny_config("trainer.max_steps=4"))
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert not partial.exists()
