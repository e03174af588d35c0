"""Rows 1 and 5 of the GPU check: the paper step trained by a real ``lightning.Trainer``,
timed by a callback (images/s, peak memory, data-wait and simulation shares) and, in the
steps after the timed ones, its host-device syncs counted. Row 4 (DDP) runs the same fit."""

from __future__ import annotations

from collections import Counter

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from data_sim.sampling import derive_seed
from pixperfect.shards.build import load_source
from pixperfect.training.datamodule import RandomCropStream
from pixperfect.training.module import RefinerModule

from .probe import StepProbe, TimedLoader
from .rows import Row, fmt, log
from .setup import WARMUP, Setup


def run_paper_step(
    cfg: DictConfig,
    sources: list[str],
    warmup: int,
    timed: int,
    counted: int,
    devices: int = 1,
    strategy: str = "auto",
) -> dict:
    """Train ``warmup + timed + max(counted, 1)`` steps; the figures of :class:`StepProbe`
    (on rank 0 under DDP: every rank keeps the same pace)."""
    torch.manual_seed(cfg.run.seed)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    probe = StepProbe(warmup, timed, counted)
    cuda = cfg.trainer.accelerator == "gpu"
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=devices,
        strategy=strategy,
        precision=cfg.trainer.precision,
        max_steps=cfg.trainer.max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        callbacks=[probe],
    )
    images = [load_source(s) for s in sources]
    stream = RandomCropStream(
        images, cfg.data.crop_size, derive_seed(cfg.run.seed, trainer.global_rank)
    )
    workers = cfg.data.num_workers
    loader = TimedLoader(
        stream,
        batch_size=cfg.data.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=cuda,
    )
    peak = cuda and devices == 1  # devices=1: Lightning trains on cuda:0
    if peak:
        torch.cuda.reset_peak_memory_stats(0)
    trainer.fit(module, train_dataloaders=loader)
    intervals = [b - a for a, b in zip(probe.starts, probe.starts[1:], strict=False)]
    if len(intervals) != timed:
        raise RuntimeError(f"timed {len(intervals)} steps, expected {timed}")
    total = sum(intervals)
    first, last = probe.starts[0], probe.starts[-1]
    waited = sum(s for t, s in loader.waits if first <= t < last)
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "batch_size": cfg.data.batch_size,
        "timed_steps": timed,
        "step_s": total / timed,
        "images_per_s_per_device": cfg.data.batch_size * timed / total,
        "data_wait_share": waited / total,
        "simulation_share": sum(probe.simulation) / total,
        "syncs_per_step": (
            sum(c.total for c in probe.syncs) / len(probe.syncs) if probe.syncs else None
        ),
        "sync_method": probe.syncs[0].method if probe.syncs else None,
        "syncs_by_op": dict(sum((c.by_op for c in probe.syncs), start=Counter())),
        "simulation_syncs_per_step": (
            sum(c.total for c in probe.simulation_syncs) / len(probe.syncs) if probe.syncs else None
        ),
        "optimizer_syncs_per_step": (
            sum(c.total for c in probe.optimizer_syncs) / len(probe.syncs) if probe.syncs else None
        ),
        "skipped_steps": int(module.skipped_steps),
        "lpips_on": module.objective.lpips is not None,
        # probe.device: Lightning moves the module back to the CPU when the fit ends.
        "peak_gib": torch.cuda.max_memory_allocated(probe.device) / 2**30 if peak else None,
    }
    return result


def paper_step_rows(run: Setup) -> tuple[list[Row], Row]:
    """Rows 1 and 5: both come from one fit."""
    where = "GPU" if run.cuda else "CPU process"
    if run.cuda:
        sync_label = "host-device syncs per training step (set_sync_debug_mode)"
    else:
        sync_label = (
            "host reads of tensor values per step (item/bool/nonzero; each is a sync on CUDA)"
        )
    step_rows = [
        Row("1", "paper_images_per_s", f"paper step: images/s per {where}"),
        Row("1", "paper_peak_memory_gib", "paper step: peak memory, GiB"),
        Row("1", "paper_data_wait_share", "paper step: data-wait share, %"),
        Row("1", "paper_simulation_share", f"paper step: simulation share ({run.codec}), %"),
    ]
    return step_rows, Row("5", "syncs_per_step", sync_label)


def measure_paper_step(run: Setup, step_rows: list[Row], sync_row: Row) -> list[Row]:
    """Row 1 from the fit's timings, row 5 (``sync_row``) from its counted steps."""
    scale, cfg = run.scale, run.cfg
    log(f"[1/6] paper step: {run.steps} steps at {scale.crop} px, batch {scale.batch}")
    step = run.info["paper_step"] = run_paper_step(
        cfg, run.sources, WARMUP, scale.steps, scale.sync_steps
    )
    how = (
        f"{cfg.trainer.precision}, {scale.crop} px, batch {scale.batch}, {scale.steps} "
        f"steps timed after {WARMUP} warm-up, {step['step_s'] * 1000:.0f} ms/step"
    )
    workers = f"{cfg.data.num_workers} workers, photos in memory"
    values = [
        (step["images_per_s_per_device"], how, ""),
        (step["peak_gib"], "torch.cuda.max_memory_allocated over the fit", "no CUDA"),
        (100 * step["data_wait_share"], f"blocked in DataLoader next(), {workers}", ""),
        (100 * step["simulation_share"], "RefinerModule.with_artifacts, synchronised", ""),
    ]
    for row, (value, note, skipped) in zip(step_rows, values, strict=True):
        row.value, row.note = value, note
        row.skipped = skipped if value is None else ""
    if not step["lpips_on"]:
        run.notes.append(
            "LPIPS terms OFF in the paper step: no LPIPS weights (--lpips-weights DIR); "
            "the paper's step also runs AlexNet-LPIPS in both spaces"
        )
    if step["skipped_steps"]:
        run.notes.append(f"paper step: {step['skipped_steps']} step(s) skipped (non-finite loss)")
    if step["syncs_per_step"] is None:
        sync_row.skipped = "--sync-steps 0"
        return step_rows
    sync_row.note = sync_note(run, step)
    sync_row.value = step["syncs_per_step"]
    return step_rows


def sync_note(run: Setup, step: dict) -> str:
    """Where row 5's syncs happen: in the simulation, in optimizer.step, elsewhere."""
    total = step["syncs_per_step"]
    in_sim, in_opt = step["simulation_syncs_per_step"], step["optimizer_syncs_per_step"]
    elsewhere = total - in_sim - in_opt
    if run.cuda:
        return (
            f"{run.scale.sync_steps} steps; in the simulation {fmt(in_sim)}, in "
            f"optimizer.step {fmt(in_opt)}, elsewhere {fmt(elsewhere)}; a lower bound "
            "(pixperfect.training.syncs)"
        )
    ops = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in sorted(step["syncs_by_op"].items()))
    return (
        f"{run.scale.sync_steps} steps; in the simulation {fmt(in_sim)} (its parameters "
        f"are drawn on the CPU, on a GPU too), in optimizer.step {fmt(in_opt)} (Adam's "
        f"step counts, CPU tensors on a GPU too), elsewhere {fmt(elsewhere)}; "
        f"totals: {ops}"
    )
