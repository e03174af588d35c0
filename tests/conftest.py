"""Shared fixtures: tiny configs, a trained-for-two-steps checkpoint, the shared assets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from pixperfect.config import load_config

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "data.source=skimage",  # the demo trains from shards that `make demo` builds first
    "data.num_workers=0",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.val_crop_size=32",
    "data.val_samples_per_image=1",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.max_steps=2",
    "trainer.val_every_n_steps=1000",
    "trainer.ckpt_every_n_steps=1000",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "trainer.accelerator=cpu",
    "eval.samples_per_image=1",
    "eval.max_size=64",
]


def local_ddp_env() -> dict[str, str]:
    """The environment of a multi-process run started by a test outside SLURM: no SLURM_*
    variables (Lightning would take the test's own job for the run's), one thread per rank
    (two ranks share the 2-core machine), unbuffered output (tests read the log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def local_ddp_train(root: Path, name: str, *overrides: str) -> list[str]:
    """The command line of `pixperfect train` on the tiny demo recipe as two gloo ranks on
    this machine (run ``name`` under ``root``), for tests that start it as a process; run it
    with :func:`local_ddp_env`."""
    return [
        str(Path(sys.executable).parent / "pixperfect"),
        "train",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        *TINY,
        f"run.root={root}",
        f"run.name={name}",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *overrides,
    ]


def gloo_timed_out(log: str, timeout_s: int) -> bool:
    """Whether a rank's log shows gloo's collective timeout. Gloo words it by where the rank
    waited: "Timed out waiting <ms>ms" in a receive, "Application timeout caused pair
    closure" when the pair itself timed out (both seen on the 2-core CI machine)."""
    return f"Timed out waiting {timeout_s * 1000}ms" in log or (
        "Application timeout caused pair closure" in log
    )


@pytest.fixture
def tiny_config(tmp_path):
    def make(*overrides: str):
        return load_config(
            ROOT / "configs" / "demo.yaml", [*TINY, f"run.root={tmp_path}", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    from pixperfect.training.train import train

    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(ROOT / "configs" / "demo.yaml", [*TINY, f"run.root={root}"])
    return train(cfg) / "checkpoints" / "last.ckpt"


@pytest.fixture
def photo() -> torch.Tensor:
    """A real photo (scikit-image's astronaut), 64x64, (3, H, W) in [0, 1]."""
    from skimage import data

    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255
    return torch.nn.functional.interpolate(x, size=(64, 64), mode="area")[0]
