"""DDP over gloo syncs both networks: two processes on halves of a batch produce the
gradients one process computes on the whole batch, for G (synced by DDP) and for D with its
R1 penalty (outside DDP's reducer, averaged by the module).

With the terms that draw per-sample random numbers on (the tone-space L1, LPIPS and
adversarial terms, instance noise on every D input): the step's draws are made for the
global batch on every rank and each rank keeps its own rows, so they match the single
process's draws only when that slicing is right."""

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


def _run(out: Path, devices: int, lpips_weights: Path) -> list[dict]:
    out.mkdir()
    env = local_ddp_env()
    result = subprocess.run(
        [sys.executable, str(WORKER), str(out), str(devices), str(lpips_weights)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(devices)]


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_gradients_of_g_and_d_with_r1(tmp_path):
    weights = _stage_lpips_weights(tmp_path / "lpips_weights")
    (single,) = _run(tmp_path / "one", 1, weights)
    ranks = _run(tmp_path / "two", 2, weights)
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    assert [r["batch"] for r in ranks] == [2, 2] and single["batch"] == 4
    random_terms = {"train/tone_l1", "train/tone_lpips", "train/tone_adversarial", "d/r1"}
    for run in (single, *ranks):
        assert random_terms <= set(run["logged"])
    names = set(single["grads"])
    assert any(n.startswith("generator.") for n in names)
    assert any(n.startswith("discriminator.") for n in names)
    for rank in ranks:
        assert set(rank["grads"]) == names
        for name in names:
            torch.testing.assert_close(
                rank["grads"][name], single["grads"][name], rtol=1e-4, atol=1e-6, msg=name
            )
