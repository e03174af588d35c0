"""Training-step cost: where the real step's time goes, and the networks' size and speed.

    .venv/bin/python benchmarks/bench_train.py [--repeats 5] [--device cpu|cuda]
        [--data auto|skimage|shards] [--size 256] [--batches 1 4] [--models unet ffc patch]
        [--threads N] [--skip-step]

Prints two markdown tables:
1. one training step at the demo config (configs/demo.yaml: its batch size, crop size and
   U-Net) but with every loss term on (RGB and tone-space L1, LPIPS and adversarial, no
   warm-ups), split into data, simulation, G forward with its loss terms (of which tone
   mapping, LPIPS and the G-side adversarial terms), G backward and update, EMA, the D step
   and lazy R1 (amortised over ``gan.r1_every``), each with its share of the measured whole
   step; then whether tone mapping stays under 10 % of the step (the target), in this step
   and in a real step without LPIPS and the GAN;
2. parameter counts and forward+backward time per step of the refiners (``unet`` at the demo
   config, ``ffc`` at paper scale, its defaults) and the patch discriminator, at ``--size``
   px for each ``--batches`` size.

The step is ``RefinerModule.training_step`` itself, run by a Lightning Trainer (one device,
no logger, no checkpoints): ``step_timer.StepTimer`` wraps the public methods the step calls
(``with_artifacts``, ``generator_forward``, ``generator_update``, ``discriminator_step``,
``update_ema``; the objective's ``tone_map`` and ``discriminator_terms``) and times by hooks
the forwards of LPIPS and of D inside the generator's forward, so a change of the module or
the objective shows in the table, and nothing here re-implements the step. The whole step
is the time from one batch's start to the next's (data loading included). R1 is put on every
other D step (``gan.r1_every=2``: where it falls, not what it costs) and its cost is the
median D step with R1 less the median one without, divided by the config's
``gan.r1_every``; the other rows are medians over the steps without R1.
``1 + 2 * --repeats`` steps, the first a warm-up, with ``torch.cuda.synchronize`` around
each part on CUDA. LPIPS needs its weights
(``loss.lpips_weights`` or the torch hub cache); without them it is timed with an untrained
network of the same architecture, and said so.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import torch
from harness import (
    ROOT,
    machine_line,
    markdown_table,
    time_it,
    use_command_allocator,
)
from omegaconf import DictConfig, OmegaConf
from step_timer import (
    D_STEP,
    D_TERMS,
    DATA,
    G_FORWARD,
    G_UPDATE,
    INSIDE,
    SIMULATION,
    TONE,
    WRAPPED,
    StepTimer,
    run_real_step,
    summarise,
)

from pixperfect.config import load_config
from pixperfect.losses import LPIPS, build_lpips
from pixperfect.models import build_discriminator, build_refiner
from pixperfect.training.datamodule import build_datamodule
from pixperfect.training.module import RefinerModule

# The rows of the step table (step_timer.py), named here too: the tests read them off this file.
__all__ = ["D_STEP", "D_TERMS", "DATA", "G_FORWARD", "G_UPDATE", "SIMULATION", "TONE", "WRAPPED",
           "StepTimer", "print_step_table", "time_step"]  # fmt: skip
DEMO = ROOT / "configs" / "demo.yaml"
# The paper's weights in both spaces (pixperfect/defaults.yaml), switched on from step 0.
ALL_TERMS = [
    "loss.l1=64",
    "loss.lpips=5",
    "loss.adversarial=1",
    "loss.tone_l1=64",
    "loss.tone_lpips=5",
    "loss.tone_adversarial=1",
    "loss.tone.warmup_steps=0",
    "gan.warmup_steps=0",
    "loss.lpips_missing=skip",  # LPIPS is injected below, weights or not
]
# The cheapest step tone mapping is part of: the demo's own terms plus tone L1.
LEAN = ["loss.lpips=0", "loss.tone_lpips=0", "loss.adversarial=0", "loss.tone_adversarial=0"]
TONE_TARGET = 0.10  # tone mapping should stay under this share of a demo step


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lpips_for_timing(cfg) -> tuple[LPIPS, str]:
    """(LPIPS network, label): the real one if its weights are staged, else the same
    architecture with random weights (the cost is the same, the values are meaningless)."""
    real = build_lpips(cfg.loss.lpips_net, cfg.loss.lpips_weights, on_missing="skip")
    if real is not None:
        return real, f"LPIPS-{cfg.loss.lpips_net}, staged weights"
    import lpips as lpips_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        network = lpips_package.LPIPS(
            pretrained=False, net=cfg.loss.lpips_net, pnet_rand=True, verbose=False
        )
    return LPIPS(network, cfg.loss.lpips_net), (
        f"LPIPS-{cfg.loss.lpips_net}, timing only, random weights (no staged weights here)"
    )


def demo_config(data: str, extra: list[str] = ()) -> tuple[DictConfig, str]:
    """The demo config with every loss term on (then ``extra``); data from shards or
    scikit-image."""
    overrides = list(ALL_TERMS)
    base = load_config(DEMO)
    shards = Path(base.data.shards or "")
    if data == "auto":
        data = "shards" if (shards / "manifest.json").is_file() else "skimage"
    if data == "skimage":
        overrides.append("data.source=skimage")
    # In-process loading: the table shows the CPU cost of one batch, which a loader worker
    # (the demo's num_workers=1) overlaps with the step when a core is free for it.
    overrides.append("data.num_workers=0")
    return load_config(DEMO, [*overrides, *extra]), data


def timed_module(cfg: DictConfig, lpips: LPIPS | None) -> RefinerModule:
    """The module of ``cfg``, with ``lpips`` put back into its objective (built with
    ``lpips_missing=skip``) at the config's weights, so LPIPS is timed with or without its
    staged weights."""
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    objective = module.objective
    if lpips is not None and (cfg.loss.lpips or cfg.loss.tone_lpips):
        objective.lpips = lpips
        objective.lpips_disabled = False
        objective.weights.update(lpips=float(cfg.loss.lpips), tone_lpips=float(cfg.loss.tone_lpips))
    return module


def time_step(
    cfg: DictConfig, device: torch.device, repeats: int, lpips: LPIPS | None = None
) -> tuple[dict[str, float], RefinerModule]:
    """(seconds per row, see :func:`summarise`; the module) of ``1 + 2 * repeats`` real
    training steps of ``cfg`` on ``device``, R1 on every other D step."""
    r1_every = int(cfg.gan.r1_every)
    cfg = OmegaConf.merge(cfg, {"gan": {"r1_every": 2}})
    module = timed_module(cfg, lpips)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    timer = run_real_step(module, datamodule.train_dataloader(), device, 1 + 2 * repeats)
    return summarise(timer, r1_every), module


def print_step_table(seconds: dict[str, float], r1_label: str) -> float:
    """The table of the step's parts, each with its share of the whole; returns the whole."""
    whole = seconds["whole"]
    rows = [(name, s) for name, s in seconds.items() if name not in ("whole", "r1")]
    rows.append((r1_label, seconds["r1"]))
    summed = sum(s for name, s in rows if name not in INSIDE)
    cells = [(name, f"{s * 1000:.1f}", f"{100 * s / whole:.1f}%") for name, s in rows]
    cells += [
        ("sum of the parts", f"{summed * 1000:.1f}", f"{100 * summed / whole:.1f}%"),
        ("**whole step** (measured, + R1 share)", f"**{whole * 1000:.1f}**", "100%"),
        (
            "unaccounted (Lightning's loop, transfer, logs)",
            f"{(whole - summed) * 1000:.1f}",
            f"{100 * (whole - summed) / whole:.1f}%",
        ),
    ]
    print(markdown_table(["part", "ms", "share of step"], cells, align="lrr"))
    return whole


def bench_step(args: argparse.Namespace, device: torch.device) -> None:
    """Table 1: the real step at the demo config with every term on, then tone mapping's
    share of it and of a real step without LPIPS and the GAN."""
    # Quiet: the "LPIPS weights missing" warnings of lpips_missing=skip (said in the table),
    # and Lightning's banner.
    logging.getLogger("pixperfect").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cfg, data = demo_config(args.data)
    lpips, lpips_label = lpips_for_timing(cfg)
    seconds, module = time_step(cfg, device, args.repeats, lpips)
    g, t = cfg.gan, cfg.loss.tone
    if data == "shards":  # artifact shards carry their composites: nothing to simulate
        seconds = {(f"{k}: none, shards" if k == SIMULATION else k): v for k, v in seconds.items()}

    b, c = cfg.data.batch_size, cfg.data.crop_size
    weights = module.objective.weights
    print(f"\n### One training step: demo config, every loss term on ({device.type})\n")
    print(
        f"batch {b}, crop {c} px, refiner {cfg.model.name} "
        f"({n_params(module.generator):,} parameters, EMA {cfg.optim.ema_decay}), patch D "
        f"({n_params(module.discriminator):,}), data source: {data}; "
        f"loss weights: {', '.join(f'{k} {v:g}' for k, v in weights.items() if v)}; "
        f"tone fit: degree {t.degree}, {t.samples_per_region} samples per region; "
        f"{lpips_label}; RefinerModule.training_step in a Trainer, precision "
        f"{cfg.trainer.precision}\n"
    )
    whole = print_step_table(seconds, f"R1 (every {g.r1_every} D steps, amortised)")
    tone = seconds[TONE]
    share = tone / whole
    verdict = "UNDER" if share < TONE_TARGET else "OVER"
    print(
        f"\ntone mapping (fit + apply, forward; its backward is in the G backward row): "
        f"{tone * 1000:.1f} ms = {100 * share:.1f}% of the step: {verdict} the "
        f"{100 * TONE_TARGET:.0f}% target"
    )
    lean_cfg, _ = demo_config(data, LEAN)
    lean, _ = time_step(lean_cfg, device, args.repeats)
    lean_share = lean[TONE] / lean["whole"]
    print(
        f"a real step without LPIPS and the GAN ({lean['whole'] * 1000:.1f} ms): tone mapping "
        f"{lean[TONE] * 1000:.1f} ms = {100 * lean_share:.1f}% of it: "
        f"{'UNDER' if lean_share < TONE_TARGET else 'OVER'} the target"
    )


def bench_models(args, device: torch.device) -> None:
    demo = load_config(DEMO)
    gan = demo.gan
    unet_kwargs = {k: demo.model[k] for k in ("base_channels", "depth", "edit_margin")}
    builders = {
        "unet": (
            f"unet (demo: {', '.join(f'{k}={v}' for k, v in unet_kwargs.items())})",
            lambda: build_refiner("unet", **unet_kwargs),
        ),
        "ffc": ("ffc (paper scale: FFCRefiner defaults)", lambda: build_refiner("ffc")),
        "patch": (
            f"patch D (base_channels={gan.base_channels}, n_down={gan.n_down})",
            lambda: build_discriminator(
                gan.discriminator, base_channels=gan.base_channels, n_down=gan.n_down
            ),
        ),
    }
    size = args.size
    print(
        f"\n### Networks: parameters and forward+backward per step, {size}x{size} px "
        f"({device.type})\n"
    )
    rows = []
    for name in args.models:
        label, build = builders[name]
        net = build().to(device)
        cells = []
        for b in args.batches:
            gen = torch.Generator().manual_seed(0)
            image = torch.rand(b, 3, size, size, generator=gen).to(device)
            mask = (torch.rand(b, 1, size, size, generator=gen) > 0.7).float().to(device)

            def step(net=net, image=image, mask=mask, kind=name) -> None:
                net.zero_grad(set_to_none=False)
                x = image.requires_grad_(True) if kind == "patch" else image
                net(x, mask).float().square().mean().backward()

            cells.append(time_it(step, device, args.repeats) * 1000)
        rows.append((label, f"{n_params(net):,}", *(f"{ms:.0f}" for ms in cells)))
        del net
    header = ["network", "parameters", *(f"batch {b} ms" for b in args.batches)]
    print(markdown_table(header, rows, align="lr" + "r" * len(args.batches)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--data",
        default="auto",
        choices=("auto", "skimage", "shards"),
        help="auto: the demo shards if built (runs/demo/shards), else skimage",
    )
    parser.add_argument("--size", type=int, default=256, help="side of the network table")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--models", nargs="+", default=["unet", "ffc", "patch"], choices=("unet", "ffc", "patch")
    )
    parser.add_argument("--skip-step", action="store_true", help="only the network table")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    allocator = use_command_allocator()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"device {device.type}, median of {args.repeats} after 1 warm-up, allocator: {allocator}")
    load_before = os.getloadavg()[0]
    if not args.skip_step:
        bench_step(args, device)
    bench_models(args, device)
    cores = os.cpu_count() or 1
    print(
        f"\nload average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{cores} cores"
        # Before the benchmark starts, the load is other processes': they slow every row.
        + (": OTHER PROCESSES SHARED THE CPU, times are inflated" if load_before >= 1 else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
