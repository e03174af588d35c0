"""Simulation throughput: the full default recipe and each family alone, batched vs a
per-sample loop, and the share of a demo training step spent simulating.

    .venv/bin/python benchmarks/bench_simulation.py [--sizes 128 256 512] [--batch 16]
        [--repeats 3] [--draws 7] [--loop-only] [--chunks]

Prints a table. On a machine with CUDA the same rows run on the GPU too. The TAEF2 round
trip row needs the weights (``--taesd DIR``, default ../shared/weights/taesd).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch
from harness import ROOT, Columns, machine_line, time_it, use_command_allocator

from data_sim.simulator import FAMILY_TYPES, ArtifactSimulator, SimConfig

FAMILIES = tuple(kind.key for kind in FAMILY_TYPES)  # a row each, in the order applied


def only(family: str | None, vae_dir: str | None = None) -> SimConfig:
    """The default recipe, or just one family (p = 1) over the default masks and alphas."""
    cfg = SimConfig()
    if family is None:
        return cfg
    for name in FAMILIES:
        section = getattr(cfg, name)
        setattr(cfg, name, replace(section, p=1.0 if name == family else 0.0))
    if vae_dir:
        cfg.texture = replace(cfg.texture, vae=replace(cfg.texture.vae, kind="taesd", path=vae_dir))
    return cfg


def photos(batch: int, size: int, device: torch.device) -> torch.Tensor:
    from skimage import data

    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x.expand(batch, -1, -1, -1).contiguous().to(device)


def slice_params(params: dict, start: int, stop: int) -> dict:
    """The parameters of samples ``start:stop`` of a batch's draw."""
    return {f: {k: v[start:stop] for k, v in p.items()} for f, p in params.items()}


def bench_recipes(sizes, batch, repeats, device, vae_dir) -> list[tuple]:
    rows = []
    recipes = [("full default recipe", only(None))] + [(f"{f} alone", only(f)) for f in FAMILIES]
    if vae_dir:
        recipes.append(("texture + TAEF2 round trip", only("texture", vae_dir)))
    for size in sizes:
        images = photos(batch, size, device)
        for name, cfg in recipes:
            sim = ArtifactSimulator(cfg)
            params = sim.sample_params(batch, size, size, torch.Generator().manual_seed(0))
            seconds = time_it(lambda: sim.apply(images, params), device, repeats)  # noqa: B023
            rows.append((device.type, size, name, batch / seconds, seconds * 1000))
    return rows


def bench_chunks(size: int, batch: int, draws: int, chunks: list[int]) -> list[float]:
    """Median seconds of the full recipe over ``batch`` CPU images run in chunks of each size
    (``batch``: the batched call, 1: the per-sample loop). Each parameter draw is warmed up and
    timed at every chunk size back to back: noise from the host hits all alike, and no single
    lucky draw decides."""
    sim = ArtifactSimulator(only(None))
    device = torch.device("cpu")
    images = photos(batch, size, device)
    times: list[list[float]] = [[] for _ in chunks]
    for seed in range(draws):
        params = sim.sample_params(batch, size, size, torch.Generator().manual_seed(seed))
        for column, chunk in zip(times, chunks, strict=True):

            def run(params=params, chunk=chunk):
                for i in range(0, batch, chunk):
                    sim.apply(images[i : i + chunk], slice_params(params, i, i + chunk))

            column.append(time_it(run, device, 1))
    return [statistics.median(column) for column in times]


def bench_demo_step(repeats: int) -> tuple[float, float]:
    """(simulation, whole step) seconds of a demo training step: 128 px, batch 8, CPU."""
    from pixperfect.config import load_config
    from pixperfect.training.module import RefinerModule

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    module = RefinerModule(dict(cfg_to_container(cfg)))
    optimizer = module.configure_optimizers()
    clean = photos(cfg.data.batch_size, cfg.data.crop_size, torch.device("cpu"))

    def simulate():
        return module.simulator(clean, torch.Generator().manual_seed(0))[0]

    def step():
        batch = simulate()
        loss = (module(batch["composite"], batch["mask"]) - batch["target"]).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return time_it(simulate, torch.device("cpu"), repeats), time_it(
        step, torch.device("cpu"), repeats
    )


def cfg_to_container(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=7, help="parameter draws, batched vs loop")
    parser.add_argument("--loop-only", action="store_true", help="only batched vs loop")
    parser.add_argument(
        "--chunks", action="store_true", help="also split the batch into chunks of 8, 4, 2"
    )
    parser.add_argument("--taesd", default=str(ROOT.parent / "shared" / "weights" / "taesd"))
    args = parser.parse_args()
    allocator = use_command_allocator()
    vae_dir = args.taesd if Path(args.taesd, "taef2_encoder.pth").is_file() else None
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    print(machine_line())
    print(f"batch {args.batch}, allocator: {allocator}")
    if not args.loop_only:
        recipes = Columns(
            ("device", "<7"), ("size", ">6"), ("  recipe", "<30"), ("images/s", ">10.1f"),
            ("ms/batch", ">10.0f"),
        )  # fmt: skip
        print("\n" + recipes.header())
        for device in devices:
            for row in bench_recipes(args.sizes, args.batch, args.repeats, device, vae_dir):
                print(recipes.row(row[0], row[1], "  " + row[2], row[3], row[4]))
        if not vae_dir:
            print("(TAEF2 row skipped: no weights at --taesd)")

    print(
        f"\nbatched vs per-sample loop, full default recipe, batch {args.batch}, CPU, "
        f"median of {args.draws} parameter draws"
    )
    loop = Columns(
        ("size", ">6"), ("batched ms", ">12.0f"), ("loop ms", ">10.0f"), ("speed-up", ">9.1f")
    )
    print(loop.header())
    met, missed = [], []
    for size in args.sizes:
        batched, looped = bench_chunks(size, args.batch, args.draws, [args.batch, 1])
        (met if looped / batched >= 3 else missed).append(f"{size}")
        print(loop.row(size, batched * 1000, looped * 1000, looped / batched) + "x")

    if args.chunks:
        chunks = sorted({c for c in (args.batch, 8, 4, 2, 1) if c <= args.batch}, reverse=True)
        print(f"\nthe batch of {args.batch} in chunks, ms (median of {args.draws} draws)")
        split = Columns(("size", ">6"), *((f"chunk {c}", ">10.0f") for c in chunks))
        print(split.header())
        for size in args.sizes:
            medians = bench_chunks(size, args.batch, args.draws, chunks)
            print(split.row(size, *(m * 1000 for m in medians)))

    if not args.loop_only:
        sim_s, step_s = bench_demo_step(args.repeats)
        print(
            f"\ndemo training step (128 px, batch 8, CPU): {step_s * 1000:.0f} ms, of which "
            f"simulation {sim_s * 1000:.0f} ms ({100 * sim_s / step_s:.0f}%)"
        )
    print(
        f"\nbatched >= 3x faster than the loop at: {', '.join(met) + ' px' if met else 'no size'}"
        + (f"; not at: {', '.join(missed)} px" if missed else "")
    )
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
