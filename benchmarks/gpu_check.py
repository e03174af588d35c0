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

Rows, and how each is measured:

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
   EMA), timed with ``timing.time_it`` (median of ``--steps`` steps after ``3`` warm-up
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
import gc
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from bench_simulation import only, photos, slice_params
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from timing import sync, time_it, use_command_allocator
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data import DataLoader

from data_sim.sampling import derive_seed
from data_sim.simulator import ArtifactSimulator
from pixperfect.config import load_config
from pixperfect.data.photos import SKIMAGE_PHOTOS, list_images
from pixperfect.shards.build import BuildSpec, build, load_source
from pixperfect.training.datamodule import RandomCropStream
from pixperfect.training.module import RefinerModule
from pixperfect.training.syncs import SyncCount, count_syncs

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout
PAPER = PROJECT_ROOT / "configs" / "paper.yaml"
SHARED = PROJECT_ROOT.parent / "shared"
DEFAULT_TAESD = SHARED / "weights" / "taesd"
TAESD_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")
WARMUP = 3  # steps not timed: kernel selection, codec loading, allocator growth
SPEEDUP_TARGET = 10.0
# CPU only: a model and batch small enough for a test to run the whole check.
TINY_MODEL = ["model.base_channels=8", "model.ffc_blocks=1", "gan.base_channels=8"]


@dataclass
class Scale:
    crop: int
    batch: int
    steps: int  # timed steps of row 1
    sync_steps: int
    sim_size: int
    sim_batch: int
    sim_draws: int
    precompute_size: int
    precompute_photos: int
    precompute_crops: int  # per photo
    ddp_steps: int
    model: list[str] = field(default_factory=list)


PAPER_SCALE = Scale(512, 2, 32, 4, 256, 16, 5, 512, 6, 8, 50)
TINY_SCALE = Scale(64, 2, 4, 2, 64, 4, 3, 64, 2, 2, 8, TINY_MODEL)


@dataclass
class Row:
    number: str
    key: str
    measure: str
    value: float | str | None = None  # None: not measured (see skipped)
    note: str = ""
    skipped: str = ""
    failed: str = ""  # the error, when measuring raised

    def cell(self) -> str:
        if self.failed:
            return f"FAILED: {self.failed}"
        if self.value is None:
            return f"skipped: {self.skipped}"
        return self.value if isinstance(self.value, str) else fmt(self.value)


def fmt(value: float) -> str:
    """Three significant digits, never in exponent notation."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


class SharedAssetMissing(RuntimeError):
    pass


def shared_asset(path: Path, files: tuple[str, ...] = ()) -> Path | None:
    """``path`` if it (and ``files`` in it) exists; else None, or under CI=true a failure."""
    missing = [path / f for f in files if not (path / f).is_file()] if path.is_dir() else [path]
    if not missing:
        return path
    if os.environ.get("CI") == "true":
        raise SharedAssetMissing(f"shared asset missing under CI=true: {missing[0]}")
    return None


# --- row 1 (and 4, 5): the paper step ---------------------------------------------------


class TimedLoader(DataLoader):
    """A DataLoader that records, for each batch the training loop asks for, when it asked
    and how long it waited (``waits``: (start, seconds))."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waits: list[tuple[float, float]] = []

    def __iter__(self):
        return _TimedIterator(super().__iter__(), self.waits)


class _TimedIterator:
    def __init__(self, iterator, waits: list[tuple[float, float]]) -> None:
        self.iterator, self.waits = iterator, waits

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.iterator)
        self.waits.append((start, time.perf_counter() - start))
        return batch


class StepProbe(Callback):
    """Clock readings at the start of steps ``warmup .. warmup + timed`` (synchronised on
    CUDA), the simulation time inside the timed steps (``with_artifacts`` wrapped,
    synchronised before and after) and the syncs of ``counted`` steps after them
    (``training_step`` wrapped in :func:`count_syncs`, the simulation's share counted
    apart too). Steps are counted by batches the
    loop starts, so a skipped step does not shift the windows."""

    def __init__(self, warmup: int, timed: int, counted: int) -> None:
        self.warmup, self.timed, self.counted = warmup, timed, counted
        self.iteration = -1
        self.starts: list[float] = []
        self.simulation: list[float] = []
        self.syncs: list[SyncCount] = []  # per counted step
        self.simulation_syncs: list[SyncCount] = []  # the part in with_artifacts
        self.optimizer_syncs: list[SyncCount] = []  # the part in optimizer.step (G and D)
        self._open: list = []  # count_syncs blocks opened by the optimizer pre-step hook
        self._hooks: list = []
        self.device = torch.device("cpu")

    def _timing(self) -> bool:
        return self.warmup <= self.iteration < self.warmup + self.timed

    def _counting(self) -> bool:
        first = self.warmup + self.timed
        return first <= self.iteration < first + self.counted

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.device = pl_module.device
        step, simulate = pl_module.training_step, pl_module.with_artifacts

        def with_artifacts(batch):
            if self._counting():
                with count_syncs(self.device) as counted:
                    out = simulate(batch)
                self.simulation_syncs.append(counted)
                return out
            if not self._timing():
                return simulate(batch)
            sync(self.device)
            start = time.perf_counter()
            out = simulate(batch)
            sync(self.device)
            self.simulation.append(time.perf_counter() - start)
            return out

        def training_step(*args, **kwargs):
            if not self._counting():
                return step(*args, **kwargs)
            with count_syncs(self.device) as counted:
                out = step(*args, **kwargs)
            self.syncs.append(counted)
            return out

        def before_optimizer_step(optimizer, args, kwargs):
            if self._counting():
                block = count_syncs(self.device)
                self._open.append((block, block.__enter__()))

        def after_optimizer_step(optimizer, args, kwargs):
            if self._open:
                block, counted = self._open.pop()
                block.__exit__(None, None, None)
                self.optimizer_syncs.append(counted)

        # Instance attributes: the module's own methods run inside; removed at the end.
        pl_module.with_artifacts = with_artifacts
        pl_module.training_step = training_step
        self._hooks = [
            register_optimizer_step_pre_hook(before_optimizer_step),
            register_optimizer_step_post_hook(after_optimizer_step),
        ]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove(pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        while self._open:  # a step raised inside optimizer.step
            block, _ = self._open.pop()
            block.__exit__(type(exception), exception, exception.__traceback__)
        self._remove(pl_module)

    def _remove(self, pl_module: L.LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for name in ("with_artifacts", "training_step"):
            pl_module.__dict__.pop(name, None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.iteration += 1
        if self.warmup <= self.iteration <= self.warmup + self.timed:
            sync(self.device)
            self.starts.append(time.perf_counter())


def paper_overrides(args, device: torch.device, scale: Scale, steps: int, vae: Path | None):
    """configs/paper.yaml made runnable here: crop, batch, steps, every term on from step 0,
    the codec's and LPIPS' weights, the tiny model on a CPU."""
    overrides = [
        f"data.crop_size={scale.crop}",
        f"data.val_crop_size={scale.crop}",
        f"data.batch_size={scale.batch}",
        f"trainer.max_steps={steps}",
        "loss.tone.warmup_steps=0",
        "gan.warmup_steps=0",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "trainer.strategy=auto",
    ]
    if device.type != "cuda":
        overrides.append("data.num_workers=0")
    if vae is not None:
        overrides.append(f"sim.texture.vae.path={vae.resolve()}")
    else:
        overrides.append("sim.texture.vae.kind=none")
    if args.lpips_weights:
        overrides.append(f"loss.lpips_weights={Path(args.lpips_weights).resolve()}")
    else:
        overrides.append("loss.lpips_missing=skip")
    return [*overrides, *scale.model, *args.overrides]


def photo_sources(arg: str, limit: int) -> list[str]:
    """Sources for :func:`load_source`: scikit-image's training photos (the paper's
    held-out chelsea and coffee left out) or the first ``limit`` images of a folder."""
    if arg == "skimage":
        return [f"skimage:{n}" for n in SKIMAGE_PHOTOS if n not in ("chelsea", "coffee")][:limit]
    return [str(p) for p in list_images(arg)[:limit]]


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


# --- row 2: simulation, batched vs a per-sample loop -----------------------------------


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


# --- row 3: precompute ------------------------------------------------------------------


def precompute_rate(sources: list[str], sim: dict, size: int, crops: int, device: str) -> dict:
    """samples/s of one artifact build of ``sources`` x ``crops`` samples (one shard), after
    an untimed build of one sample (CUDA start-up, kernels, file cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        warm = BuildSpec(sources[:1], kind="artifact", size=size, crops_per_image=1, sim=sim)
        build(warm, Path(tmp) / "warm-up", progress=False, device=device)
        n = len(sources) * crops
        spec = BuildSpec(
            sources, kind="artifact", size=size, crops_per_image=crops, shard_size=n, sim=sim
        )
        summary = build(spec, Path(tmp) / "timed", progress=False, device=device)
    return {**summary, "manifest": None, "samples_per_s": summary["samples"] / summary["seconds"]}


# --- row 4: DDP in a subprocess ---------------------------------------------------------


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
        command = [sys.executable, str(Path(__file__).resolve()), "--ddp-worker", str(out)]
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


# --- row 6: the fast paths ---------------------------------------------------------------

# (row key, label, the overrides that turn it on); every one is off in the baseline
FAST_PATHS = [
    ("compile", "torch.compile of the generator", "trainer.compile"),
    ("channels_last", "channels_last", "trainer.channels_last"),
    ("cudnn_benchmark", "cudnn.benchmark", "trainer.cudnn_benchmark"),
    ("fused_adam", "fused Adam", "optim.fused"),
    ("foreach_ema", "foreach EMA", "optim.ema_foreach"),
]


def generator_step_s(cfg: DictConfig, device: torch.device, steps: int) -> float:
    """Median seconds of the generator's step (row 6) with ``cfg``'s switches: the module's
    fast paths (``configure_model``), its Adam (``configure_optimizers``) and EMA."""
    torch.manual_seed(cfg.run.seed)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True)).to(device)
    module.configure_model()
    optimizer = module.configure_optimizers()
    g = torch.Generator().manual_seed(cfg.run.seed)
    size, batch = cfg.data.crop_size, cfg.data.batch_size
    target = torch.rand(batch, 3, size, size, generator=g).to(device)
    composite = (target + 0.1 * torch.rand(batch, 3, 1, 1, generator=g).to(device)).clamp(0, 1)
    mask = torch.zeros(batch, 1, size, size, device=device)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    bf16 = str(cfg.trainer.precision).startswith("bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            refined = module.generator(composite, mask)
        (refined.float() - target).abs().mean().backward()
        optimizer.step()
        module.update_ema()

    for _ in range(WARMUP - 1):  # time_it runs one more: compilation, cuDNN's choices
        step()
    return time_it(step, device, steps)


def fast_path_rows(run: Setup) -> list[Row]:
    """Row 6: measured on CUDA, else skipped (as row 1's peak memory)."""
    rows = [Row("6", f"fast_{key}_speedup", f"fast path: {label}, speed-up x")
            for key, label, _ in FAST_PATHS]  # fmt: skip
    rows.append(Row("6", "fast_all_speedup", "fast paths: all on (paper config), speed-up x"))
    if not run.cuda:
        log("[6/6] fast paths: skipped")
        for row in rows:
            row.skipped = "no CUDA"
        return rows
    return guarded(rows, lambda: measure_fast_paths(run, rows))


def measure_fast_paths(run: Setup, rows: list[Row], steps: int | None = None) -> list[Row]:
    """Row 6: the generator's step with every switch off, each alone on, all on."""
    steps = steps or run.scale.steps
    switches = [switch for _, _, switch in FAST_PATHS]
    log(f"[6/6] fast paths: generator step, {steps} steps per variant")
    off = [f"{s}=false" for s in switches]
    variants = [[*off[:i], f"{s}=true", *off[i + 1 :]] for i, s in enumerate(switches)]
    variants.append([f"{s}=true" for s in switches])
    benchmark = torch.backends.cudnn.benchmark
    times = {}
    try:
        for name, overrides in [("off", off), *zip((r.key for r in rows), variants, strict=True)]:
            torch._dynamo.reset()  # each variant compiles (or not) afresh
            gc.collect()
            if run.cuda:
                torch.cuda.empty_cache()
            cfg = OmegaConf.merge(run.cfg, OmegaConf.from_dotlist(overrides))
            times[name] = generator_step_s(cfg, run.device, steps)
    finally:
        torch.backends.cudnn.benchmark = benchmark
        torch._dynamo.reset()
    run.info["fast_paths"] = times
    where = f"{run.cfg.trainer.precision}, {run.scale.crop} px, batch {run.scale.batch}"
    for row in rows:
        row.value = times["off"] / times[row.key]
        row.note = (
            f"generator step, {where}: {times['off'] * 1000:.1f} ms all off, "
            f"{times[row.key] * 1000:.1f} ms with it; median of {steps}"
        )
    return rows


# --- the table --------------------------------------------------------------------------


def pick_scale(args, device: torch.device) -> Scale:
    base = PAPER_SCALE if device.type == "cuda" else TINY_SCALE
    chosen = {
        "crop": args.crop_size,
        "batch": args.batch_size,
        "steps": args.steps,
        "sync_steps": args.sync_steps,
        "sim_size": args.sim_size,
        "sim_batch": args.sim_batch,
        "sim_draws": args.sim_draws,
        "ddp_steps": args.ddp_steps,
    }
    values = {k: v for k, v in vars(base).items()}
    values.update({k: v for k, v in chosen.items() if v is not None})
    return Scale(**values)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def guarded(failed_rows: list[Row], run) -> list[Row]:
    """``run()``'s rows; if it raises, ``failed_rows`` marked FAILED (traceback on stderr),
    so one broken row does not cost the others' device time."""
    try:
        return run()
    except SharedAssetMissing:
        raise
    except Exception as e:  # noqa: BLE001 - reported in the table and on stderr
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:160]
        for row in failed_rows:
            row.failed = f"{type(e).__name__}: {first}"
        return failed_rows


@dataclass
class Setup:
    """What every row's measurement shares: the device, the scale, the paper config made
    runnable here, the photos, and the header (``info``) and ``notes`` filled in as rows run."""

    args: argparse.Namespace
    device: torch.device
    scale: Scale
    vae: Path | None  # the TAEF2 weights; None: the codec is off
    sources: list[str]
    steps: int  # of the row-1 fit: warm-up, timed and sync-counted steps
    cfg: DictConfig
    info: dict
    notes: list[str]

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def codec(self) -> str:
        return f"codec {'on the ' + self.device.type if self.vae else 'OFF'}"


def setup(args) -> Setup:
    """The scale, the shared assets and configs/paper.yaml with this run's overrides."""
    device = torch.device(args.device)
    scale = pick_scale(args, device)
    vae = shared_asset(Path(args.taesd), TAESD_FILES) if args.taesd else None
    notes = []
    if vae is None:
        notes.append(f"codec OFF: no TAEF2 weights at {args.taesd or '(none)'} (--taesd DIR)")
    sources = photo_sources(args.photos, 16)
    steps = WARMUP + scale.steps + max(scale.sync_steps, 1)
    overrides = paper_overrides(args, device, scale, steps, vae)
    cfg = load_config(PAPER, overrides)
    info = {
        "device": device_name(device),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "scale": "paper" if device.type == "cuda" else "tiny (CPU)",
        "overrides": overrides,
    }
    return Setup(args, device, scale, vae, sources, steps, cfg, info, notes)


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


def measure_precompute(run: Setup, pre_row: Row) -> list[Row]:
    """Row 3: samples/s of an artifact shards build on this device."""
    scale = run.scale
    n = scale.precompute_photos * scale.precompute_crops
    log(f"[3/6] precompute: {n} artifact samples at {scale.precompute_size} px")
    pre = run.info["precompute"] = precompute_rate(
        run.sources[: scale.precompute_photos],
        OmegaConf.to_container(run.cfg.sim, resolve=True),
        scale.precompute_size,
        scale.precompute_crops,
        run.device.type,
    )
    pre_row.value = pre["samples_per_s"]
    pre_row.note = (
        f"shards build --kind artifact on {pre['device']}, {pre['samples']} samples at "
        f"{scale.precompute_size} px, 1 process, PNG encoding included"
    )
    return [pre_row]


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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(rows: list[Row]) -> str:
    lines = ["| # | measure | value | how |", "|---|---|---|---|"]
    lines += [f"| {r.number} | {r.measure} | {r.cell()} | {r.note} |" for r in rows]
    return "\n".join(lines)


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
