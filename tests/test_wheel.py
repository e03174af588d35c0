"""The package as a user installs it: a wheel built from this checkout, installed into a new
virtual environment outside it, runs ``pixperfect --version``, ``refine`` with the shipped
refiner, ``Refiner.from_pretrained()`` and a tiny ``train --config my.yaml`` from a folder
with no checkout in sight (the weights and the defaults layer are package data).

No network: the wheel is built without build isolation, installed with ``--no-deps``, and
the new environment reaches torch and the other dependencies through a ``.pth`` line naming
this environment's site-packages (a plain path: the checkout's editable-install hook, itself
a ``.pth`` there, is not run, so ``pixperfect`` is the wheel's)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixperfect.cli import main

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
# Small and CPU-only: the tiny recipe of conftest.py with the demo's MSE-only loss (no LPIPS
# weights to stage); paths in it are relative to the folder the command runs in.
MY_CONFIG = """\
data: {source: skimage, num_workers: 0, crop_size: 32, batch_size: 2, val_crop_size: 32,
  val_samples_per_image: 1}
model: {base_channels: 8, depth: 2}
loss: {l1: 0.0, mse: 1.0, lpips: 0.0, adversarial: 0.0, tone_l1: 0.0, tone_lpips: 0.0,
  tone_adversarial: 0.0}
trainer: {max_steps: 2, accelerator: cpu, val_every_n_steps: 1000, ckpt_every_n_steps: 1000,
  progress_bar: false}
eval: {samples_per_image: 1, max_size: 64}
"""


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> str:
    """Run ``cmd`` as a user would (no PYTHONPATH, no model override); its stdout, or a
    failure that shows the command and everything it printed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PIXPERFECT_MODEL", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(
            f"`{' '.join(map(str, cmd))}` (in {cwd}) exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


def _source_copy(dest: Path) -> Path:
    """What the wheel is built from (pyproject, README, src/ and the top-level packages),
    copied so that the build writes nothing into the checkout."""
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    for package in ROOT.iterdir():
        if (package / "__init__.py").is_file():  # data_sim and its siblings
            shutil.copytree(package, dest / package.name, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new virtual environment outside the checkout with the freshly built wheel installed."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail(
            "setuptools is missing here: the wheel is built without build isolation (no "
            "network); `pip install -e '.[dev]'` installs it"
        )
    base = tmp_path_factory.mktemp("wheel")
    source = _source_copy(base / "source")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*build, "--no-cache-dir", "-w", str(base / "dist"), str(source)], cwd=base)
    (wheel,) = (base / "dist").glob("pixperfect-*.whl")
    env = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=base)
    python = env / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], base
    )
    # The dependencies, by path only: torch and the rest are not installed a second time.
    (Path(purelib.strip()) / "project_dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    _run([*install, "--no-deps", "--no-index", "--no-cache-dir", str(wheel)], cwd=base)
    return env


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working folder with no checkout in it or above it."""
    assert ROOT not in tmp_path.resolve().parents
    return tmp_path


def test_the_wheel_is_what_runs_and_says_its_version(venv, outside):
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import pixperfect, data_sim; print(pixperfect.__file__); print(data_sim.__file__)",
        ],
        outside,
    ).split()
    assert all(venv.resolve() in Path(f).resolve().parents for f in where), where
    out = _run([str(venv / "bin" / "pixperfect"), "--version"], outside)
    assert out.strip() == f"pixperfect {VERSION}"


def test_refine_from_the_wheel_is_the_shipped_refiner_of_the_checkout(venv, outside):
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[100:196, 150:278])  # 96 x 128, a real photo
    photo[30:70, 40:90, 0] //= 2  # a colour shift in the edit: something to refine
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[30:70, 40:90] = 255
    Image.fromarray(photo).save(outside / "edit.png")
    Image.fromarray(mask).save(outside / "mask.png")
    args = ["refine", "--image", "edit.png", "--mask", "mask.png"]
    _run([str(venv / "bin" / "pixperfect"), *args, "--out", "refined.png"], outside)
    refined = np.asarray(Image.open(outside / "refined.png"))
    assert refined.shape == photo.shape
    assert not np.array_equal(refined[mask > 0], photo[mask > 0]), "it refines the edit"
    assert np.array_equal(refined[:10], photo[:10]), "far from the edit nothing changes"
    # The same command in this (checkout) environment: the packaged weights are the shipped ones.
    here = [*args[:2], str(outside / "edit.png"), args[3], str(outside / "mask.png")]
    assert main([*here, "--out", str(outside / "checkout.png")]) == 0
    assert np.array_equal(refined, np.asarray(Image.open(outside / "checkout.png")))


def test_from_pretrained_loads_the_weights_inside_the_installed_package(venv, outside):
    code = (
        "from pixperfect.inference import Refiner; "
        "from pixperfect.inference.pretrained import default_model_dir; "
        "r = Refiner.from_pretrained(); print(r.provenance['name']); print(default_model_dir())"
    )
    name, folder = _run([str(venv / "bin" / "python"), "-c", code], outside).split()
    assert name == "pixperfect-unet-cpu-v2"
    assert venv.resolve() in Path(folder).resolve().parents


def test_train_from_any_folder_reads_my_config_over_the_packaged_defaults(venv, outside):
    (outside / "my.yaml").write_text(MY_CONFIG)
    _run([str(venv / "bin" / "pixperfect"), "train", "--config", "my.yaml"], outside)
    # run.root (runs, the packaged default) is relative to the folder the command ran in;
    # run.name defaults to the experiment file's name.
    assert (outside / "runs" / "my" / "checkpoints" / "last.ckpt").is_file()
