"""The cluster scripts and defaults for the first run (docs/cluster.md, first-run checklist): the
GPU binding and its warning, --mem=0 and FIRST_RUN in train.sbatch, clean precompute without a
GPU, DDP's options and its bf16 hook, the torch floor, one OpenCV thread per loader worker, and
the resume check done once per node. What runs on the local SLURM cluster is in
tests/test_slurm_*.py."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import tomllib
import torch
from conftest import ROOT

from pixperfect.config import load_config
from pixperfect.training import checkpoints, cluster, run_folder
from pixperfect.training.datamodule import opencv_threads_for_workers

TRAIN_SBATCH = (ROOT / "slurm" / "train.sbatch").read_text()
PRECOMPUTE = (ROOT / "slurm" / "precompute.sbatch").read_text()
CLUSTER_MD = (ROOT / "docs" / "cluster.md").read_text()


def test_train_sbatch_takes_all_node_memory_and_has_a_first_run_nccl_switch():
    assert "#SBATCH --mem=0" in TRAIN_SBATCH.splitlines()
    assert re.search(r'if \[\[ "\$\{FIRST_RUN:-0\}" == 1 \]\]', TRAIN_SBATCH)
    assert "NCCL_DEBUG=" in TRAIN_SBATCH and "NCCL_DEBUG_SUBSYS=" in TRAIN_SBATCH


def test_gpus_per_node_is_the_one_documented_binding():
    for text in (TRAIN_SBATCH, CLUSTER_MD):
        launches = [line for line in text.splitlines() if "sbatch --nodes" in line]
        assert any("--gpus-per-node=8" in line for line in launches)
        assert not any("--gpus-per-task" in line for line in launches)


def test_precompute_asks_for_no_gpu_and_builds_clean_crops_on_the_cpu():
    assert not any(line.startswith("#SBATCH") and "gpu" in line for line in PRECOMPUTE.splitlines())
    assert "extra+=(--device cpu)" in PRECOMPUTE


def test_the_first_run_checklist_names_every_switch():
    checklist = CLUSTER_MD.split("### First-run checklist", 1)[1]
    for switch in (
        "--gpus-per-node",
        "--mem=0",
        "FIRST_RUN=1",
        "ddp_bf16_compress",
        "gradient_as_bucket_view",
        "trainer.compile",
        "cudnn_benchmark",
        "channels_last",
        "optim.fused",
        "ema_foreach",
        "torch>=2.4",
        "cv2.setNumThreads(1)",
        "once per node",
    ):
        assert switch in checklist, switch


def test_paper_config_turns_the_fast_paths_on():
    cfg = load_config(ROOT / "configs" / "paper.yaml", [])
    t, o = cfg.trainer, cfg.optim
    assert t.ddp_bf16_compress and t.compile and t.cudnn_benchmark and t.channels_last
    assert o.fused and o.ema_foreach
    defaults = load_config(None, [])
    assert not (defaults.trainer.compile or defaults.trainer.ddp_bf16_compress)


def test_torch_floor_is_past_the_autocast_spectral_norm_crash():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = {re.split(r"[<>=]", d)[0]: d for d in deps}
    assert floor["torch"] == "torch>=2.4"
    assert floor["torchvision"] == "torchvision>=0.19"  # torch 2.4's torchvision


@pytest.mark.parametrize(
    ("env", "gpus"),
    [
        ({"SLURM_GPUS_ON_NODE": "8"}, 8),
        ({"SLURM_GPUS_PER_NODE": "gpu:8"}, 8),
        ({"SLURM_GPUS_PER_NODE": "a100:4"}, 4),
        ({}, None),
    ],
)
def test_node_gpus_reads_slurm(env, gpus):
    assert cluster.node_gpus(env) == gpus


def test_a_task_that_sees_one_gpu_of_a_multi_gpu_node_is_warned():
    warning = cluster.binding_warning(1, {"SLURM_GPUS_ON_NODE": "8"})
    assert warning and "--gpus-per-node=8" in warning and "peer-to-peer" in warning
    assert cluster.binding_warning(8, {"SLURM_GPUS_ON_NODE": "8"}) is None
    assert cluster.binding_warning(1, {"SLURM_GPUS_ON_NODE": "1"}) is None
    assert cluster.binding_warning(1, {}) is None


def test_device_plan_logs_the_warning_under_slurm(monkeypatch, caplog):
    import torch

    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_NAME", "pixperfect-train")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    trainer = load_config(None, ["trainer.accelerator=gpu", "trainer.devices=8"]).trainer
    with caplog.at_level("WARNING"):
        cluster.device_plan(trainer)
    assert "sees 1 of its node's 8 GPUs" in caplog.text


def test_ddp_buckets_the_gradients_skips_buffer_broadcasts_and_compresses_on_request():
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    t = load_config(None, ["trainer.devices=2"]).trainer
    strategy = cluster.ddp_strategy(t, 2, "auto")
    kwargs = strategy._ddp_kwargs
    assert kwargs["gradient_as_bucket_view"] is True
    assert kwargs.get("forward_sync_buffers", kwargs.get("broadcast_buffers")) is False
    assert strategy._ddp_comm_hook is None
    t = load_config(None, ["trainer.devices=2", "trainer.ddp_bf16_compress=true"]).trainer
    strategy = cluster.ddp_strategy(t, 2, "auto")
    assert strategy._ddp_comm_hook is default_hooks.bf16_compress_hook
    assert isinstance(strategy, cluster.RunDDPStrategy)


def test_loader_workers_run_opencv_on_one_thread_set_before_they_fork():
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        opencv_threads_for_workers(0)
        assert cv2.getNumThreads() == 4  # no workers: the process keeps its pool
        opencv_threads_for_workers(2)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


class _OpenCvThreads(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return cv2.getNumThreads()


def test_a_worker_forked_after_opencv_started_its_pool_starts_and_runs_on_one_thread():
    """The paper recipe's 2-node run hung in its first step: cv2.setNumThreads inside a
    forked worker waited on the pool lock the parent held when it forked."""
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (3000, 3000))  # starts the pool
        opencv_threads_for_workers(1)
        loader = torch.utils.data.DataLoader(_OpenCvThreads(), num_workers=1, timeout=60)
        assert [int(n) for n in loader] == [1, 1]
    finally:
        cv2.setNumThreads(before)


def _slurm(local: int) -> dict[str, str]:
    return {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_LOCALID": str(local)}


def test_the_resume_check_reads_the_checkpoints_once_per_node(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"stand-in")
    checked = []
    monkeypatch.setattr(run_folder, "checkpoint_problem", lambda p: checked.append(p))

    # local rank 1 waits for local rank 0's answer; without one it checks for itself
    assert run_folder.resume_checkpoint(run, _slurm(1), timeout_s=0.3) == ckpt
    assert checked == [ckpt]
    checked.clear()
    assert run_folder.resume_checkpoint(run, _slurm(0)) == ckpt  # local rank 0 checks ...
    for local in (1, 2, 3):  # ... and the node's other ranks take its answer
        assert run_folder.resume_checkpoint(run, _slurm(local)) == ckpt
    assert checked == [ckpt]
    # another node (host name in the key) or launch (job step, restart) checks again
    assert checkpoints.node_launch_key(_slurm(0)) != checkpoints.node_launch_key(
        {**_slurm(0), "SLURM_RESTART_COUNT": "1"}
    )
    # once the ranks have met, local rank 0 removes the answer
    checkpoints.remove_answer(run, _slurm(0))
    assert not list(run.glob(checkpoints.ANSWER_GLOB))


def test_without_a_named_launch_every_rank_checks(tmp_path, monkeypatch):
    checked = []
    monkeypatch.setattr(run_folder, "checkpoint_problem", lambda p: checked.append(p))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    for _ in range(2):
        run_folder.resume_checkpoint(tmp_path, {"LOCAL_RANK": "1"})
    assert len(checked) == 2 and not list(tmp_path.glob(checkpoints.ANSWER_GLOB))
