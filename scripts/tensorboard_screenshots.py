"""Screenshots of TensorBoard for docs/training.md: two small demo-like runs (CPU, about a
minute each), a real TensorBoard on 127.0.0.1, headless Chromium on its scalars, custom
scalars, images and hparams tabs, each PNG quantised to stay small.

    .venv/bin/python scripts/tensorboard_screenshots.py            # train, then shoot
    .venv/bin/python scripts/tensorboard_screenshots.py --no-train # shoot existing runs

Needs Chromium (Debian: ``apt-get install chromium``); CI does not run this. The runs are
``configs/demo.yaml`` on scikit-image's photos (no shards needed) at 64 px crops: ``demo``
(its MSE objective) and ``demo_gan`` (plus a small adversarial term after 50 steps), so the
hparams tab compares two runs and the discriminator's curves exist. Written to
``docs/img/tensorboard_{scalars,custom_scalars,images,hparams}.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "data.source=skimage",
    "data.crop_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val_crop_size=96",
    "data.val_samples_per_image=2",
    "trainer.val_every_n_steps=50",
    "trainer.ckpt_every_n_steps=100000",
    "trainer.log_every_n_steps=2",
    "trainer.image_every_n_steps=100",
    "trainer.progress_bar=false",
    "trainer.accelerator=cpu",
]
RUNS = {
    "demo": [],
    "demo_gan": [
        "loss.adversarial=0.01",
        "gan.warmup_steps=50",
        "loss.tone_mse=1.0",
        "loss.tone.warmup_steps=100",
        "gan.base_channels=16",
        "gan.n_down=2",
    ],
}
# Tab -> (URL fragment, browser window W,H, width of the PNG). The scalars tab filtered to the
# curves to look at first, the images tab to the training and validation grids; the hparams
# table is wide (five hparams, five metrics): rendered wider and scaled down.
SCALARS = r"^(train/(loss|mse|adversarial|tone_mse)|val/band_psnr|d/loss)$"
TABS = {
    "scalars": ("scalars&tagFilter=" + urllib.parse.quote(SCALARS, safe=""), "1400,1000", 1400),
    "custom_scalars": ("custom_scalars", "1400,1000", 1400),
    "images": ("images&tagFilter=" + urllib.parse.quote("/images$", safe=""), "1400,1000", 1400),
    "hparams": ("hparams", "2100,700", 1400),
}


def train_runs(root: Path, steps: int) -> None:
    """Both runs, from scratch, with ``pixperfect train`` (the documented command)."""
    pixperfect = Path(sys.executable).parent / "pixperfect"
    for name, overrides in RUNS.items():
        shutil.rmtree(ROOT / root / name, ignore_errors=True)  # root: relative to ROOT or absolute
        command = [str(pixperfect), "train", "--config", "configs/demo.yaml"]
        command += [*COMMON, *overrides, f"run.root={root}", f"run.name={name}"]
        command += [f"trainer.max_steps={steps}"]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    """A TensorBoard on 127.0.0.1 serving ``logdir``, once it has loaded every run. It runs in
    the repository root, so a ``logdir`` relative to it is what its page shows (never this
    machine's absolute path)."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reload_interval", "0"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/data/plugin/scalars/tags", timeout=5) as r:
                if len(json.loads(r.read())) == len(RUNS):
                    return proc, base
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError("TensorBoard did not load the runs within 60 s")


def screenshot(chromium: str, url: str, out: Path, size: str, budget_ms: int) -> None:
    """Headless Chromium renders ``url`` (TensorBoard's page needs a few seconds of its
    JavaScript: ``budget_ms`` of virtual time) into ``out``."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--disable-dev-shm-usage", f"--window-size={size}"]
    command += [f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url]
    subprocess.run(command, check=True, capture_output=True, timeout=180)


def shrink(source: Path, target: Path, width: int) -> None:
    """The screenshot ``width`` pixels wide as an optimised 256-colour PNG (TensorBoard's
    flat UI loses next to nothing)."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            height = round(image.height * width / image.width)
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(target, optimize=True)
    print(f"{target}: {target.stat().st_size // 1024} KB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "tensorboard_demo")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--no-train", action="store_true", help="shoot the runs in --runs")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time per page")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH (Debian: apt-get install chromium)")
    runs = args.runs.resolve()
    if runs.is_relative_to(ROOT):  # the page shows the log folder: relative, as users type it
        runs = runs.relative_to(ROOT)
    if not args.no_train:
        train_runs(runs, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    proc, base = start_tensorboard(runs)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for tab, (fragment, size, width) in TABS.items():
                raw = Path(tmp) / f"{tab}.png"
                screenshot(chromium, f"{base}/#{fragment}", raw, size, args.budget_ms)
                shrink(raw, args.out.resolve() / f"tensorboard_{tab}.png", width)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
