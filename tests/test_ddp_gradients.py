"""DDP over gloo syncs both networks: two processes on halves of a batch produce the
gradients one process computes on the whole batch, for G (synced by DDP) and for D with its
R1 penalty (outside DDP's reducer, averaged by the module).

With the terms that draw per-sample random numbers on (the tone-space L1, LPIPS and
adversarial terms, instance noise on every D input): the step's draws are made for the
global batch on every rank and each rank keeps its own rows, so they match the single
process's draws only when that slicing is right.

The ranks run the run's own DDP strategy (training/cluster.py ``device_plan`` and
``ddp_strategy``: ``RunDDPStrategy`` with ``gradient_as_bucket_view`` and no buffer
broadcast), checked in the wrapped generator; with ``trainer.ddp_bf16_compress=true`` its
bf16 compression hook runs on gloo too: G's gradients are then bfloat16 values and agree
with the single process's to bfloat16 tolerance. In every case the ranks hold the same
gradients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import local_ddp_env

WORKER = Path(__file__).parent / "ddp_gradient_worker.py"


def _stage_lpips_weights(folder: Path) -> Path:
    """Random AlexNet features staged as the LPIPS backbone file: the wiring is exercised,
    the values are not LPIPS and are never reported as such."""
    from torchvision.models import alexnet

    folder.mkdir()
    state = {k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(state, folder / "alexnet-owt-7be5be79.pth")
    return folder


def _run(out: Path, devices: int, lpips_weights: Path, *overrides: str) -> list[dict]:
    out.mkdir()
    env = local_ddp_env()
    result = subprocess.run(
        [sys.executable, str(WORKER), str(out), str(devices), str(lpips_weights), *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(devices)]


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory) -> Path:
    return _stage_lpips_weights(tmp_path_factory.mktemp("lpips") / "weights")


@pytest.fixture(scope="module")
def single(tmp_path_factory, lpips_weights) -> dict:
    """The single-process reference: one process on all 4 samples."""
    (run,) = _run(tmp_path_factory.mktemp("one") / "run", 1, lpips_weights)
    assert run["world_size"] == 1 and run["batch"] == 4
    assert run["strategy"] == "SingleDeviceStrategy" and run["ddp"] is None
    return run


RANDOM_TERMS = {"train/tone_l1", "train/tone_lpips", "train/tone_adversarial", "d/r1"}
BUCKET_VIEWS_NO_BROADCAST = {"gradient_as_bucket_view": True, "sync_buffers": False}


def _check_ranks(ranks: list[dict], single: dict, hooks: list[str]) -> None:
    """Two ranks of the run's DDP strategy, with ``hooks`` registered, that computed every
    random term and hold the same gradients (names and values) as each other."""
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["batch"] for r in ranks] == [2, 2]
    for run in (single, *ranks):
        assert RANDOM_TERMS <= set(run["logged"])
    for rank in ranks:
        assert rank["strategy"] == "RunDDPStrategy"
        assert rank["ddp"] == {**BUCKET_VIEWS_NO_BROADCAST, "comm_hooks": hooks}
        assert set(rank["grads"]) == set(single["grads"])
    for name, grad in ranks[0]["grads"].items():  # one all-reduce result on every rank
        torch.testing.assert_close(ranks[1]["grads"][name], grad, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_gradients_of_g_and_d_with_r1(
    tmp_path, lpips_weights, single
):
    ranks = _run(tmp_path / "two", 2, lpips_weights)
    _check_ranks(ranks, single, hooks=[])
    names = set(single["grads"])
    assert any(n.startswith("generator.") for n in names)
    assert any(n.startswith("discriminator.") for n in names)
    for rank in ranks:
        for name in names:
            torch.testing.assert_close(
                rank["grads"][name], single["grads"][name], rtol=1e-4, atol=1e-6, msg=name
            )


@pytest.mark.slow
def test_bf16_compressed_ranks_agree_with_the_single_process_to_bf16_tolerance(
    tmp_path, lpips_weights, single
):
    """``trainer.ddp_bf16_compress=true`` on gloo: G's gradients (DDP's reducer) are all-reduced
    in bfloat16, so every one is a bfloat16 value (the hook ran: fp32 sums are not), and each
    tensor is the single process's to bfloat16's precision (8 significant bits; each rank's
    half rounded, then their sum: a relative error of a few 2^-9 in norm). D's gradients are
    averaged by the module in float32 (outside DDP), to float32 tolerance."""
    ranks = _run(tmp_path / "bf16", 2, lpips_weights, "trainer.ddp_bf16_compress=true")
    _check_ranks(ranks, single, hooks=["bf16_compress_hook"])
    generator = [n for n in single["grads"] if n.startswith("generator.")]
    assert generator
    compressed_differs = False
    for name in generator:
        grad, reference = ranks[0]["grads"][name], single["grads"][name]
        assert torch.equal(grad, grad.bfloat16().float()), f"{name}: not bfloat16 values"
        error = (grad - reference).norm() / reference.norm().clamp_min(1e-12)
        assert error <= 2**-6, f"{name}: relative error {error:.2e} over bf16 tolerance"
        compressed_differs |= not torch.equal(grad, reference)
    assert compressed_differs  # the float32 run matches to 1e-4; this one was rounded
    for name in single["grads"]:
        if not name.startswith("generator."):
            torch.testing.assert_close(
                ranks[0]["grads"][name], single["grads"][name], rtol=1e-4, atol=1e-6, msg=name
            )
