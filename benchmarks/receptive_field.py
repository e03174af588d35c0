"""Receptive field and step cost of the CPU-scale refiners (issue: global context).

    .venv/bin/python benchmarks/receptive_field.py [--size 256] [--batch 8] [--crop 128]

For each candidate: parameters; the empirical receptive field (the input pixels whose
gradient of one output pixel at the image centre is non-zero, reported as the radius of
their bounding box and the share of the image they cover); and the forward + backward time
of a training-sized batch (median of 5 after 2 warm-ups). A colour shift spread over a
whole edit is a statistic of the edit: a refiner sees it only if its receptive field
covers the edit.
"""

from __future__ import annotations

import argparse

import torch
from harness import Columns, machine_line, time_it, use_command_allocator

from pixperfect.models import build_refiner

CANDIDATES = {
    "unet (demo: 16 ch, depth 3)": ("unet", {"base_channels": 16, "depth": 3}),
    "unet (24 ch, depth 4)": ("unet", {"base_channels": 24, "depth": 4}),
    "ffc (16 ch, depth 3, 2 blocks)": ("ffc", {"base_channels": 16, "ffc_blocks": 2}),
    "ffc (24 ch, depth 3, 3 blocks)": ("ffc", {"base_channels": 24, "ffc_blocks": 3}),
}


def receptive_field(model: torch.nn.Module, size: int) -> tuple[int, float]:
    """(radius in px of the box of input pixels that reach the centre output, share of the
    image those pixels cover), from the gradient of one output pixel."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size, requires_grad=True)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    out = model(x, mask)
    out[0, :, size // 2, size // 2].sum().backward()
    reach = x.grad.abs().sum(1)[0] > 0
    ys, xs = reach.nonzero(as_tuple=True)
    radius = int(max((ys - size // 2).abs().max(), (xs - size // 2).abs().max()))
    return radius, reach.float().mean().item()


def step_ms(model: torch.nn.Module, batch: int, crop: int) -> float:
    x = torch.rand(batch, 3, crop, crop)
    mask = torch.zeros(batch, 1, crop, crop)
    mask[..., crop // 4 : 3 * crop // 4, crop // 4 : 3 * crop // 4] = 1

    def step() -> None:
        model(x, mask).square().mean().backward()

    step()  # a second warm-up: time_it runs one more
    return 1000 * time_it(step, torch.device("cpu"), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side for the field")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    args = parser.parse_args()
    use_command_allocator()
    print(machine_line())
    table = Columns(
        ("refiner", "<34"), ("params", ">10,"), ("RF radius px", ">13"), ("RF share", ">9.0%"),
        ("fwd+bwd ms", ">11.0f"), gap=" ",
    )  # fmt: skip
    print(
        f"{table.header()}  (field at {args.size} px; step at batch {args.batch}, {args.crop} px)"
    )
    for name, (kind, kwargs) in CANDIDATES.items():
        model = build_refiner(kind, colour_prior="reinhard", **kwargs)
        params = sum(p.numel() for p in model.parameters())
        radius, share = receptive_field(model, args.size)
        ms = step_ms(model, args.batch, args.crop)
        print(table.row(name, params, radius, share, ms))


if __name__ == "__main__":
    main()
