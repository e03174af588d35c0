"""Mean |gradient| per weight tensor of a refiner at initialisation, three batches of its
recipe's loss (the table in docs/training.md, "Why the network learned nothing on its
prior"), to compare with Adam's eps (1e-8).

    .venv/bin/python scripts/grad_at_init.py configs/reference_cpu.yaml [key=value ...]

Batches are crops of scikit-image's photos with the recipe's artifacts simulated in the
step, without the latent codec (its weights are staged separately).
"""

from __future__ import annotations

import sys

import torch

from pixperfect.config import load_config
from pixperfect.shards.format import to_float
from pixperfect.training.datamodule import build_datamodule
from pixperfect.training.module import RefinerModule


def main(argv: list[str]) -> int:
    torch.manual_seed(0)
    fixed = ["data.source=skimage", "data.num_workers=0", "sim.texture.vae.kind=none"]
    cfg = load_config(argv[0], fixed + argv[1:])
    module = RefinerModule(cfg)
    module._shard = lambda: {"rank": 0, "world": 1}  # outside a Trainer: one process
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    batches = iter(datamodule.train_dataloader())
    grads: dict[str, list[float]] = {}
    for _ in range(3):
        batch = module.with_artifacts(to_float(next(batches)))
        _, terms = module.generator_forward(batch, 1000, module.step_generator(1000))
        module.generator.zero_grad()
        terms.loss.backward()
        for name, p in module.generator.named_parameters():
            if p.grad is not None and name.endswith("weight"):
                grads.setdefault(name[: -len(".weight")], []).append(p.grad.abs().mean().item())
    print(f"{argv[0]}: loss {float(terms.loss.detach()):.6f}")
    for name, values in grads.items():
        print(f"  {name:28s} mean |grad| {sum(values) / len(values):.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
