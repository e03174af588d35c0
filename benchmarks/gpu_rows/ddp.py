"""Row 4 of the GPU check: the paper step under DDP on 2 GPUs (or, as a test aid, 2 CPU
processes over gloo), run as ``gpu_check.py --ddp-worker`` in a subprocess, which
Lightning's launcher re-runs for rank 1."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pixperfect.config import load_config

from .paper_step import run_paper_step
from .rows import Row, guarded, log
from .setup import PAPER, WARMUP, Scale, Setup, paper_overrides, photo_sources, pick_scale

SCRIPT = Path(__file__).resolve().parents[1] / "gpu_check.py"  # the command the worker runs


def ddp_worker(args) -> int:
    """``--ddp-worker OUT``: the paper step on 2 devices (rank 0 writes OUT). Lightning's
    launcher starts rank 1 as a copy of this command, which runs this same function."""
    device = torch.device("cuda" if not args.ddp_on_cpu else "cpu")
    scale = pick_scale(args, device)
    vae = Path(args.taesd) if args.taesd else None
    cfg = load_config(PAPER, paper_overrides(args, device, scale, scale.ddp_steps, vae))
    timed = scale.ddp_steps - WARMUP - 1
    result = run_paper_step(
        cfg, photo_sources(args.photos, 16), WARMUP, timed, 0, devices=2, strategy="ddp"
    )
    if result["rank"] == 0:
        Path(args.ddp_worker).write_text(json.dumps(result))
    return 0


def run_ddp(args, scale: Scale, vae: Path | None, on_gpus: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        command = [sys.executable, str(SCRIPT), "--ddp-worker", str(out)]
        command += ["--crop-size", str(scale.crop), "--batch-size", str(scale.batch)]
        command += ["--ddp-steps", str(scale.ddp_steps), "--photos", args.photos]
        command += ["--taesd", str(vae.resolve()) if vae else ""]
        if args.lpips_weights:
            command += ["--lpips-weights", args.lpips_weights]
        if not on_gpus:
            command += ["--ddp-on-cpu"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(PYTHONUNBUFFERED="1")
        if not on_gpus:
            env.update(OMP_NUM_THREADS="1")
        result = subprocess.run(
            [*command, *args.overrides], env=env, capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0 or not out.is_file():
            tail = (result.stdout + result.stderr)[-3000:]
            raise RuntimeError(f"DDP subprocess failed (exit {result.returncode}):\n{tail}")
        return json.loads(out.read_text())


def ddp_rows(run: Setup) -> list[Row]:
    """Row 4: measured on 2 GPUs (or, as a test aid, 2 CPU processes), else skipped."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_gpus = run.cuda and gpus >= 2
    unit = "GPU" if on_gpus or not run.args.ddp_on_cpu else "process"
    rows = [
        Row("4", "ddp_images_per_s_total", "DDP x2: images/s total"),
        Row("4", "ddp_images_per_s_per_gpu", f"DDP x2: images/s per {unit}"),
    ]
    if on_gpus or run.args.ddp_on_cpu:
        return guarded(rows, lambda: measure_ddp(run, rows, on_gpus))
    log("[4/6] DDP: skipped")
    for row in rows:
        row.skipped = f"{gpus} GPU(s)" if run.cuda or not gpus else "--device cpu"
    return rows


def measure_ddp(run: Setup, rows: list[Row], on_gpus: bool) -> list[Row]:
    """Row 4: images/s of the paper step under DDP, in a subprocess (:func:`run_ddp`)."""
    scale = run.scale
    label = "GPUs" if on_gpus else "CPU processes (gloo; --ddp-on-cpu test aid)"
    log(f"[4/6] DDP: {scale.ddp_steps} steps on 2 {label}")
    if on_gpus:  # row 1's fit in this process still holds cached blocks on GPU 0
        gc.collect()
        torch.cuda.empty_cache()
    result = run.info["ddp"] = run_ddp(run.args, scale, run.vae, on_gpus)
    total = result["images_per_s_per_device"] * result["world_size"]
    how = (
        f"2 {label}, {scale.ddp_steps} steps ({result['timed_steps']} timed), batch "
        f"{result['batch_size']} per rank, {result['step_s'] * 1000:.0f} ms/step"
    )
    for row, value in zip(rows, (total, total / result["world_size"]), strict=True):
        row.value, row.note = value, how
    return rows
