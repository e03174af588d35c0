"""Row 3 of the GPU check: samples/s of an artifact shards build on this device, one
process, after an untimed warm-up build."""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from pixperfect.shards.build import BuildSpec, build

from .rows import Row, log
from .setup import Setup


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
