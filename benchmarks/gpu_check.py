"""GPU check: what the paper's recipe costs on this device, as one table.

    make gpu-check            # = .venv/bin/python benchmarks/gpu_check.py
    .venv/bin/python benchmarks/gpu_check.py [--out check.json] [--lpips-weights DIR]
        [--crop-size 512] [--batch-size 2] [--steps 32] [--ddp-steps 50] [key=value ...]

On CUDA it runs at the paper's scale (configs/paper.yaml: the 40M FFC refiner, 512 px,
batch 2 per GPU, bf16-mixed). On a CPU it runs the same code at a tiny scale (64 px crops,
model.base_channels=8, model.ffc_blocks=1, gan.base_channels=8, a few steps), in well under
a minute, so a test can run it; no GPU figure is printed unless it was measured. The header
names the device and the versions; ``--out FILE`` also writes the rows as JSON. Trailing
``key=value`` arguments are config overrides on top of the ones below.

Rows, and how each is measured (each row's code is a module of benchmarks/gpu_rows/; this
file is the command line; timing and the table come from benchmarks/harness.py):

1. **Paper step**: ``RefinerModule`` built from configs/paper.yaml and trained by a real
   ``lightning.Trainer`` (devices=1, the config's precision, logger and checkpoints off) on
   a DataLoader of clean random crops of real photos (scikit-image's bundled photos, or
   ``--photos DIR``), so artifacts are simulated on the device inside the step, the TAEF2
   round trip included (weights: ``--taesd``, default ../shared/weights/taesd). Every loss
   term is on from step 0 (``loss.tone.warmup_steps=0 gan.warmup_steps=0``: the step as it
   is after the paper's warm-ups); LPIPS needs ``--lpips-weights DIR``, else its terms are
   off (``loss.lpips_missing=skip``) and the table says so. A callback takes a clock
   reading, after ``torch.cuda.synchronize``, at the start of every timed step; the first
   3 steps are warm-up and not timed.
   - images/s per GPU: batch size / mean time from one step's start to the next's (data
     loading, simulation, both networks' steps, the EMA update and Lightning's loop);
   - peak memory: ``torch.cuda.max_memory_allocated`` over the whole fit (CUDA only);
   - data-wait share: time the loop spent blocked in the DataLoader's ``next()`` (recorded
     by the loader) over the timed steps' time. The loader crops photos held in memory
     (``data.num_workers`` workers); the paper's run decodes PNG shards instead, which
     this row does not measure (benchmarks/bench_shards.py does);
   - simulation share: time in ``RefinerModule.with_artifacts``, synchronised before and
     after, over the timed steps' time (codec on the device when the weights were found).
2. **Simulation, batched vs a per-sample loop**: the full default recipe (as
   bench_simulation.py) on a batch of real photos on the device, the whole batch in one
   call against one call per sample, median over parameter draws (``--sim-draws``), each
   timed after a warm-up call with the device synchronised around it. The target is 10x at
   256 px, batch 16 on the GPU; the verdict row says whether this run reached 10x.
3. **Precompute**: ``pixperfect.shards.build.build`` of artifact shards from a few photos
   (the paper's simulation recipe with the codec) with ``device=`` this device, one
   process; samples / seconds from its summary (PNG encoding on the CPU included), after an
   untimed warm-up build.
4. **DDP**: with 2 or more GPUs, the paper step with devices=2, strategy ddp in a
   subprocess (Lightning's launcher re-runs this script for rank 1) for ``--ddp-steps``
   steps; images/s of both GPUs together and per GPU, timed as in row 1 on rank 0.
   Fewer than 2 GPUs: "skipped: N GPU(s)". ``--ddp-on-cpu`` (a test aid) runs the same
   path as 2 CPU processes over gloo, labelled as such.
5. **Host-device syncs per training step**, counted in ``training_step`` over
   ``--sync-steps`` steps after the timed ones (``pixperfect.training.syncs.count_syncs``):
   on CUDA with ``torch.cuda.set_sync_debug_mode("warn")`` (every warning caught and
   counted); on a CPU, where nothing syncs, the host reads of tensor values
   (``aten._local_scalar_dense``: item/float/bool, and ``aten.nonzero``), each of which is
   a sync on CUDA when its tensor is on the GPU. The parts inside the simulation and
   inside ``optimizer.step`` are given too: on a CPU most of theirs would not be syncs on
   a GPU (the simulation's parameters are drawn on the CPU there too; Adam keeps its
   step counts on the CPU), so "elsewhere" is the closer proxy.

6. **Fast paths** (CUDA only; on a CPU "skipped: no CUDA"): the generator's step of the
   paper config (``RefinerModule.configure_model`` applies the switches, the module's own
   Adam and ``update_ema``; forward under the config's autocast, an L1 loss, backward, Adam,
   EMA), timed with ``harness.time_it`` (median of ``--steps`` steps after ``3`` warm-up
   steps, compilation and cuDNN's benchmark included there) with every switch off, with
   each switch alone on (``trainer.compile``, ``trainer.channels_last``,
   ``trainer.cudnn_benchmark``, ``optim.fused``, ``optim.ema_foreach``) and with all on
   (the paper config). Each row is the speed-up (time without / time with), the two step
   times in its note. Neither the discriminator, the simulation nor the loader is in it:
   rows 1 and 4 time the whole step with the switches as the config has them.

A row whose measurement raises reads "FAILED: <error>" (traceback on stderr), the other
rows still run, and the exit status is 1. Shared assets: a missing ../shared asset (the
TAEF2 weights) turns the codec off with a note; under ``CI=true`` it is a failure (exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import torch
from gpu_rows.ddp import ddp_rows, ddp_worker
from gpu_rows.fast_paths import fast_path_rows, measure_fast_paths
from gpu_rows.paper_step import measure_paper_step, paper_step_rows
from gpu_rows.precompute import measure_precompute
from gpu_rows.rows import Row, guarded, table
from gpu_rows.setup import DEFAULT_TAESD, SPEEDUP_TARGET, WARMUP, SharedAssetMissing, setup
from gpu_rows.simulation import measure_simulation
from harness import use_command_allocator

__all__ = ["check", "fast_path_rows", "main", "measure_fast_paths", "parse_args", "setup"]


def check(args) -> tuple[list[Row], list[str], dict]:
    """Every row, in table order: (rows, notes, info for the header and the JSON)."""
    run = setup(args)
    # 1 and 5: one fit; the syncs are counted in the steps after the timed ones.
    step_rows, sync_row = paper_step_rows(run)
    rows = list(guarded(step_rows, lambda: measure_paper_step(run, step_rows, sync_row)))
    # 2: simulation, batched vs a per-sample loop.
    sim_rows = [
        Row("2", "sim_speedup", "simulation: batched vs per-sample loop, speed-up x"),
        Row("2", "sim_speedup_verdict", f">= {SPEEDUP_TARGET:.0f}x"),
    ]
    rows += guarded(sim_rows, lambda: measure_simulation(run, sim_rows))
    # 3: precompute.
    pre_row = Row("3", "precompute_samples_per_s", f"precompute: samples/s ({run.codec})")
    rows += guarded([pre_row], lambda: measure_precompute(run, pre_row))
    # 4: DDP.
    rows += ddp_rows(run)
    # 5: measured with row 1, so it fails with it.
    for row in step_rows:
        if row.failed:
            sync_row.failed = row.failed
    rows.append(sync_row)
    # 6: the fast paths, on CUDA.
    rows += fast_path_rows(run)
    return rows, run.notes, run.info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults of the sizes: the paper's on CUDA (512 px, batch 2), tiny on a CPU.",
    )
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", help="also write the rows as JSON here")
    parser.add_argument("--lpips-weights", help="folder with the LPIPS weights (else LPIPS off)")
    parser.add_argument("--taesd", default=str(DEFAULT_TAESD), help="TAEF2 weights folder")
    parser.add_argument("--photos", default="skimage", help="skimage, or a folder of photos")
    parser.add_argument("--crop-size", type=int, help="paper step crop (CUDA: 512)")
    parser.add_argument("--batch-size", type=int, help="paper step batch per GPU (CUDA: 2)")
    parser.add_argument("--steps", type=int, help="timed steps after 3 warm-up (CUDA: 32)")
    parser.add_argument("--sync-steps", type=int, help="steps whose syncs are counted (CUDA: 4)")
    parser.add_argument("--sim-size", type=int, help="row 2 size (CUDA: 256)")
    parser.add_argument("--sim-batch", type=int, help="row 2 batch (CUDA: 16)")
    parser.add_argument("--sim-draws", type=int, help="row 2 parameter draws (CUDA: 5)")
    parser.add_argument("--ddp-steps", type=int, help="row 4 steps (CUDA: 50)")
    parser.add_argument(
        "--ddp-on-cpu",
        action="store_true",
        help="test aid: run row 4 as 2 CPU processes (gloo) at the tiny scale",
    )
    parser.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be key=value: {' '.join(bad)}")
    for name, least in (("steps", 1), ("sync_steps", 0), ("ddp_steps", WARMUP + 2)):
        if getattr(args, name) is not None and getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*srun.*")
    allocator = use_command_allocator()  # in DDP workers too: every rank as `pixperfect`
    if args.ddp_worker:
        return ddp_worker(args)
    device = torch.device(args.device)
    try:
        rows, notes, info = check(args)
    except SharedAssetMissing as e:
        print(f"gpu-check: {e}", file=sys.stderr)
        return 2
    print(
        f"PixPerfect GPU check | {info['device']} | torch {info['torch']} | "
        f"lightning {info['lightning']} | allocator: {allocator}"
    )
    print(
        f"scale: {info['scale']}; configs/paper.yaml with "
        + " ".join(o for o in info["overrides"] if not o.startswith("trainer.max_steps"))
    )
    print()
    print(table(rows))
    if notes:
        print()
        print("\n".join(f"- {n}" for n in notes))
    if device.type != "cuda":
        print("- CPU run at the tiny scale: no GPU figure was measured")
    if args.out:
        info["rows"] = [r.__dict__ for r in rows]
        info["notes"] = notes
        Path(args.out).write_text(json.dumps(info, indent=1, default=str))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
