"""Row 6 of the GPU check (CUDA only): the generator's step of the paper config with every
fast path off, each alone on and all on; each row the speed-up against all off."""

from __future__ import annotations

import gc

import torch
from harness import time_it
from omegaconf import DictConfig, OmegaConf

from pixperfect.training.module import RefinerModule

from .rows import Row, guarded, log
from .setup import WARMUP, Setup

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
