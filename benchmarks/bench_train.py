"""Training-step cost: where a demo step's time goes with every loss term on, and the size
and speed of the refiners and the discriminator.

    .venv/bin/python benchmarks/bench_train.py [--repeats 5] [--device cpu|cuda]
        [--data auto|skimage|shards] [--size 256] [--batches 1 4] [--models unet ffc patch]
        [--threads N] [--skip-step]

Prints two markdown tables:
1. one training step at the demo config (configs/demo.yaml: its batch size, crop size and
   U-Net) but with every loss term on (RGB and tone-space L1, LPIPS and adversarial, no
   warm-ups), split into data, simulation, G forward+backward, G update, tone mapping (fit,
   apply), LPIPS, the G-side adversarial terms, the D step and lazy R1 (amortised over
   ``gan.r1_every``), each with its share of the measured whole step; then whether tone
   mapping stays under 10 % of the step (the target);
2. parameter counts and forward+backward time per step of the refiners (``unet`` at the demo
   config, ``ffc`` at paper scale, its defaults) and the patch discriminator, at ``--size``
   px for each ``--batches`` size.

Each part runs alone on the same simulated batch (inputs that need gradients are fresh
leaves), so the parts add up to about the whole step; the difference is shown. Timings are
medians of ``--repeats`` runs after one warm-up (the step's parts in turn, so load from other
processes spreads over all of them), with ``torch.cuda.synchronize`` around each
on CUDA. LPIPS needs its weights (``loss.lpips_weights`` or the torch hub cache); without
them it is timed with an untrained network of the same architecture, and said so.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from timing import sync, time_it, use_command_allocator

from pixperfect.config import PROJECT_ROOT, load_config
from pixperfect.data.datamodule import build_datamodule
from pixperfect.losses import (
    LPIPS,
    build_lpips,
    discriminative_tone_map,
    discriminator_loss,
    generator_loss,
    r1_penalty,
)
from pixperfect.losses.tone_mapping import apply_tone_curves, fit_tone_curves, sample_betas
from pixperfect.models import build_discriminator, build_refiner
from pixperfect.shards.format import to_float
from pixperfect.training.module import RefinerModule

DEMO = PROJECT_ROOT / "configs" / "demo.yaml"
# The paper's weights in both spaces (configs/defaults.yaml), switched on from step 0.
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
TONE_TARGET = 0.10  # tone mapping should stay under this share of a demo step


def time_interleaved(
    fns: dict[str, Callable[[], object] | None], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median seconds of each function (None: 0), run in turn ``repeats`` times after one
    warm-up round, so that load from other processes spreads evenly over all of them."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            if fn is None:
                continue
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) if t else 0.0 for name, t in times.items()}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


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


def demo_config(data: str):
    """The demo config with every loss term on; data from shards or scikit-image."""
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
    return load_config(DEMO, overrides), data


def bench_step(args, device: torch.device) -> None:
    # Quiet: the "LPIPS weights missing" warnings of lpips_missing=skip (said in the table).
    logging.getLogger("pixperfect").setLevel(logging.ERROR)
    cfg, data = demo_config(args.data)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True)).to(device)
    g_opt = module.configure_optimizers()
    d_opt = module._d_optimizer
    objective = module.objective
    lpips, lpips_label = lpips_for_timing(cfg)
    # Put LPIPS back into the objective (built with lpips_missing=skip): same terms, weights.
    objective.lpips = lpips
    objective.lpips_disabled = False
    objective.weights.update(lpips=float(cfg.loss.lpips), tone_lpips=float(cfg.loss.tone_lpips))
    objective.to(device)
    gen_net, disc = module.generator, module.discriminator
    g, t = cfg.gan, cfg.loss.tone
    w = objective.weights

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    batches = iter(datamodule.train_dataloader())

    def load() -> dict:
        return {
            k: v.to(device)
            for k, v in to_float(next(batches)).items()
            if isinstance(v, torch.Tensor)
        }

    def simulate(batch: dict) -> dict:
        return module.with_artifacts(batch)

    first = load()
    on_the_fly = "composite" not in first  # artifact shards carry their composites
    batch = simulate(first)
    composite, mask, target = batch["composite"], batch["mask"], batch["target"]

    def rng() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    with torch.no_grad():
        refined0 = gen_net(composite, mask)
        tone_pred0, tone_gt0 = discriminative_tone_map(
            refined0,
            target,
            mask,
            rng(),
            beta_range=tuple(t.beta),
            degree=t.degree,
            samples_per_region=t.samples_per_region,
        )

    def g_fwd_bwd() -> None:
        g_opt.zero_grad(set_to_none=False)
        refined = gen_net(composite, mask)
        # The losses' gradient w.r.t. the output is cheap; this is the network's own cost.
        (w["l1"] * (refined - target).abs().mean()).backward()

    g_fwd_bwd()  # gradients for the update row

    def g_update() -> None:
        torch.nn.utils.clip_grad_norm_(gen_net.parameters(), cfg.optim.grad_clip)
        g_opt.step()
        module.update_ema()

    def tone_fit() -> None:
        generator = rng()
        beta = sample_betas(refined0.shape[0], generator, tuple(t.beta))
        fit_tone_curves(
            refined0,
            target,
            mask,
            beta,
            generator,
            degree=t.degree,
            samples_per_region=t.samples_per_region,
        )

    generator = rng()
    coeffs = fit_tone_curves(
        refined0,
        target,
        mask,
        sample_betas(refined0.shape[0], generator, tuple(t.beta)),
        generator,
        degree=t.degree,
        samples_per_region=t.samples_per_region,
    )

    def tone_apply() -> None:
        pred = leaf(refined0)
        mapped_pred = apply_tone_curves(pred, coeffs).clamp(0, 1)
        mapped_gt = apply_tone_curves(target, coeffs).clamp(0, 1)
        (w["tone_l1"] * (mapped_pred - mapped_gt).abs().mean()).backward()

    def lpips_terms() -> None:  # RGB and tone space: two LPIPS forwards + backwards
        loss = w["lpips"] * lpips(leaf(refined0), target).mean()
        loss = loss + w["tone_lpips"] * lpips(leaf(tone_pred0), tone_gt0).mean()
        loss.backward()

    def g_adversarial() -> None:  # D judges the fake in both spaces, gradient to the fake
        disc.requires_grad_(False)
        loss = (
            w["adversarial"]
            * generator_loss(
                disc, leaf(refined0), mask, noise_sigma=g.instance_noise, generator=rng()
            )[0]
        )
        loss = (
            loss
            + w["tone_adversarial"]
            * generator_loss(
                disc, leaf(tone_pred0), mask, noise_sigma=g.instance_noise, generator=rng()
            )[0]
        )
        loss.backward()
        disc.requires_grad_(True)

    def d_step(refined: torch.Tensor, tone_pred: torch.Tensor, tone_gt: torch.Tensor) -> None:
        generator = rng()
        loss = discriminator_loss(
            disc,
            target,
            refined,
            mask,
            band=g.band,
            noise_sigma=g.instance_noise,
            generator=generator,
        ).loss
        loss = (
            loss
            + discriminator_loss(
                disc,
                tone_gt,
                tone_pred,
                mask,
                band=g.band,
                noise_sigma=g.instance_noise,
                generator=generator,
            ).loss
        )
        d_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.optim.grad_clip)
        d_opt.step()

    def r1() -> None:
        d_opt.zero_grad()
        r1_penalty(
            disc,
            target,
            mask,
            gamma=g.r1_gamma,
            every=g.r1_every,
            noise_sigma=g.instance_noise,
            generator=rng(),
        ).backward()

    def whole_step() -> None:
        """RefinerModule.training_step without Lightning: simulate, G step with the full
        objective (the module's Objective), D step in both spaces (R1 amortised apart)."""
        b = simulate({"target": target}) if on_the_fly else batch
        generator = rng()
        disc.requires_grad_(False)
        refined = gen_net(b["composite"], b["mask"])
        terms, extras = objective.generator_terms(
            refined.float(), b["target"], b["mask"], 0, generator, disc
        )
        g_opt.zero_grad()
        terms["loss"].backward()
        g_update()
        disc.requires_grad_(True)
        d_step(refined.detach(), extras["tone_pred"], extras["tone_target"])

    sim_name = "simulation (ArtifactSimulator)" if on_the_fly else "simulation (none: shards)"
    r1_name = f"R1 (every {g.r1_every} D steps, amortised)"
    fns = {
        "data (one batch, in-process)": load,
        sim_name: (lambda: simulate({"target": target})) if on_the_fly else None,
        "G forward+backward": g_fwd_bwd,
        "G update (clip, Adam, EMA)": g_update,
        "tone mapping: fit (sample, solve)": tone_fit,
        "tone mapping: apply fwd+bwd": tone_apply,
        "LPIPS fwd+bwd (RGB + tone space)": lpips_terms,
        "G adversarial terms (RGB + tone)": g_adversarial,
        "D step (real+fake, RGB + tone)": lambda: d_step(refined0, tone_pred0, tone_gt0),
        r1_name: r1,
        "whole": whole_step,
    }
    seconds = time_interleaved(fns, device, args.repeats)
    seconds[r1_name] /= g.r1_every
    measured = seconds.pop("whole")
    parts = list(seconds.items())
    data_s, r1_s = parts[0][1], parts[-1][1]
    whole = measured + data_s + r1_s
    summed = sum(s for _, s in parts)
    tone = parts[4][1] + parts[5][1]

    b, c = cfg.data.batch_size, cfg.data.crop_size
    print(f"\n### One training step: demo config, every loss term on ({device.type})\n")
    print(
        f"batch {b}, crop {c} px, refiner {cfg.model.name} ({n_params(gen_net):,} parameters, "
        f"EMA {cfg.optim.ema_decay}), patch D ({n_params(disc):,}), data source: {data}; "
        f"loss weights: {', '.join(f'{k} {v:g}' for k, v in w.items() if v)}; "
        f"tone fit: degree {t.degree}, {t.samples_per_region} samples per region; "
        f"{lpips_label}\n"
    )
    print("| part | ms | share of step |")
    print("|---|---:|---:|")
    for name, seconds in parts:
        print(f"| {name} | {seconds * 1000:.1f} | {100 * seconds / whole:.1f}% |")
    print(f"| sum of the parts | {summed * 1000:.1f} | {100 * summed / whole:.1f}% |")
    print(f"| **whole step** (measured, + data + R1 share) | **{whole * 1000:.1f}** | 100% |")
    print(
        f"| unaccounted (whole - sum of parts) | {(whole - summed) * 1000:.1f} | "
        f"{100 * (whole - summed) / whole:.1f}% |"
    )
    share = tone / whole
    verdict = "UNDER" if share < TONE_TARGET else "OVER"
    print(
        f"\ntone mapping (fit + apply fwd+bwd): {tone * 1000:.1f} ms = {100 * share:.1f}% of "
        f"the step: {verdict} the {100 * TONE_TARGET:.0f}% target"
    )
    # The same step with LPIPS and the GAN off (the demo's own terms plus tone L1): the
    # cheapest step tone mapping can be part of, so its largest share.
    lean = sum(s for _, s in parts[:6])
    print(
        f"without LPIPS and the GAN (data, simulation, G, update, tone mapping: "
        f"{lean * 1000:.1f} ms) tone mapping is {100 * tone / lean:.1f}% of the step: "
        f"{'UNDER' if tone / lean < TONE_TARGET else 'OVER'} the target"
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
    header = "".join(f" batch {b} ms |" for b in args.batches)
    print(f"| network | parameters |{header}")
    print("|---|---:|" + "---:|" * len(args.batches))
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
        print(f"| {label} | {n_params(net):,} |" + "".join(f" {ms:.0f} |" for ms in cells))
        del net


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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
        f"{device.type} ({name}), median of {args.repeats} after 1 warm-up, "
        f"allocator: {allocator}"
    )
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
