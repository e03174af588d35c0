"""Row 2 of the GPU check: the full default recipe on a batch of photos on the device, the
whole batch in one call against one call per sample, and whether the speed-up reached the
target."""

from __future__ import annotations

import statistics

import torch
from bench_simulation import only, photos, slice_params
from harness import time_it

from data_sim.simulator import ArtifactSimulator

from .rows import Row, log
from .setup import SPEEDUP_TARGET, Setup


def batched_vs_loop(size: int, batch: int, draws: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of the full default recipe over ``batch`` photos on ``device``, in one
    call and in one call per sample, over ``draws`` parameter draws (bench_simulation's
    ``bench_chunks`` with chunks of ``batch`` and 1, on any device)."""
    sim = ArtifactSimulator(only(None))
    images = photos(batch, size, device)
    batched, looped = [], []
    for seed in range(draws):
        params = sim.sample_params(batch, size, size, torch.Generator().manual_seed(seed))

        def whole(params=params):
            sim.apply(images, params)

        def loop(params=params):
            for i in range(batch):
                sim.apply(images[i : i + 1], slice_params(params, i, i + 1))

        batched.append(time_it(whole, device, 1))
        looped.append(time_it(loop, device, 1))
    return statistics.median(batched), statistics.median(looped)


def measure_simulation(run: Setup, sim_rows: list[Row]) -> list[Row]:
    """Row 2: the speed-up and whether it reached the target."""
    scale, device = run.scale, run.device
    log(f"[2/6] simulation: batched vs loop, {scale.sim_size} px, batch {scale.sim_batch}")
    size, batch, draws = scale.sim_size, scale.sim_batch, scale.sim_draws
    batched, looped = batched_vs_loop(size, batch, draws, device)
    speedup = looped / batched
    run.info["simulation"] = {"batched_s": batched, "loop_s": looped, "size": size, "batch": batch}
    sim_rows[0].value = speedup
    sim_rows[0].note = (
        f"{device.type}, {size} px, batch {batch}, default recipe: batched "
        f"{batched * 1000:.1f} ms, loop {looped * 1000:.1f} ms, median of {draws} draws"
    )
    sim_rows[1].value = "yes" if speedup >= SPEEDUP_TARGET else "no"
    at_target = run.cuda and size == 256 and batch == 16
    sim_rows[1].note = "target: 256 px, batch 16 on the GPU" + (
        "" if at_target else f" (this run: {device.type}, {size} px, batch {batch})"
    )
    return sim_rows
