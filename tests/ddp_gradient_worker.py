"""Run one training step of G and D (with R1) and save every gradient, for
tests/test_ddp_gradients.py. ``python ddp_gradient_worker.py OUT DEVICES LPIPS_WEIGHTS
[key=value ...]``: with 2 devices Lightning's DDP launcher starts rank 1 as a copy of this
command (gloo on CPU); each rank trains on its share of the same 4 samples, so the synced
gradients must equal those of one process on all 4. The strategy is the run's own
(training/cluster.py: ``device_plan`` and ``ddp_strategy``, so ``RunDDPStrategy`` with
``gradient_as_bucket_view``, no buffer broadcast and, with ``trainer.ddp_bf16_compress=true``,
the bf16 compression hook); trailing ``key=value`` arguments are config overrides, and each
rank records the DDP options its wrapped generator runs with.

Every term that draws random numbers per sample is on: the tone-space L1, LPIPS and
adversarial terms (random betas and fitting pixels) and instance noise on every D input
(G's adversarial terms, D's reals and fakes in both spaces, R1). The step's draws are made
for the global batch and each rank keeps its rows, so they match the single process's only
if that slicing is right. LPIPS_WEIGHTS holds random AlexNet features staged as the backbone
file: the wiring is exercised, the values are not LPIPS and are never reported as such."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, TINY  # noqa: E402

from pixperfect.config import load_config  # noqa: E402
from pixperfect.training.cluster import ddp_strategy, device_plan  # noqa: E402
from pixperfect.training.module import RefinerModule  # noqa: E402

OVERRIDES = [
    "loss.l1=64",
    "loss.mse=0",
    "loss.lpips=0",
    "loss.adversarial=1",
    "loss.tone_l1=64",  # per-sample random betas and fitting pixels
    "loss.tone_lpips=5",
    "loss.tone_adversarial=1",
    "loss.tone.warmup_steps=0",  # the tone space in this very step
    "loss.tone.samples_per_region=64",
    "gan.base_channels=4",
    "gan.n_down=2",
    "gan.r1_every=1",  # R1 in this very step
    "gan.r1_gamma=1.0",
    "gan.instance_noise=0.05",  # per-sample noise on every D input, R1's included
    "optim.grad_clip=0",  # raw gradients, not clipped ones
    "optim.ema_decay=0",
    "trainer.max_steps=1",
]


class SaveGradients(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        self.record = {
            "grads": grads,
            "world_size": trainer.world_size,
            "batch": batch["target"].shape[0],
            "strategy": type(trainer.strategy).__name__,
            "ddp": ddp_options_in_use(trainer.strategy.model),
        }

    def on_train_end(self, trainer, module) -> None:
        # What the step logged (written after the callbacks' batch end): which terms ran
        self.record["logged"] = sorted(module.last_logged)
        torch.save(self.record, self.out / f"rank{trainer.global_rank}.pt")


def ddp_options_in_use(wrapped: torch.nn.Module) -> dict | None:
    """The options the DistributedDataParallel wrapper really runs with (None: no DDP)."""
    if not isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
        return None
    # torch 2.10+ names the forward buffer broadcast forward_sync_buffers
    renamed = hasattr(wrapped, "forward_sync_buffers")
    name = "forward_sync_buffers" if renamed else "broadcast_buffers"
    return {
        "gradient_as_bucket_view": wrapped.gradient_as_bucket_view,
        "sync_buffers": getattr(wrapped, name),
        "comm_hooks": [hook.__name__ for hook, _ in wrapped._comm_hooks],
    }


class ContiguousShares(L.LightningDataModule):
    """Rank r of w trains on samples r * n / w ... (r + 1) * n / w, in order: the rows of
    the global batch (all n samples, the single process's batch) that the step's random
    draws give rank r. (Lightning's DistributedSampler would deal the samples otherwise.)"""

    def __init__(self, samples: list[dict]) -> None:
        super().__init__()
        self.samples = samples

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        share = len(self.samples) // world
        mine = self.samples[rank * share : (rank + 1) * share]
        return torch.utils.data.DataLoader(mine, batch_size=share, shuffle=False)


def main(out: Path, devices: int, lpips_weights: Path, overrides: list[str]) -> None:
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        [
            *TINY,
            *OVERRIDES,
            f"loss.lpips_weights={lpips_weights}",
            f"run.root={out}",
            "run.name=grads",
            "trainer.accelerator=cpu",
            f"trainer.devices={devices}",
            "trainer.strategy=auto",  # what the run resolves: DDP for more than one device
            *overrides,
        ],
    )
    torch.manual_seed(0)  # the same initial G and D in every process
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    data = torch.Generator().manual_seed(1)
    targets = torch.rand(4, 3, 32, 32, generator=data)
    composites = (targets + 0.2 * torch.rand(4, 3, 1, 1, generator=data)).clamp(0, 1)
    masks = torch.zeros(4, 1, 32, 32)
    masks[:, :, 8:24, 8:24] = 1
    samples = [
        {"target": t, "composite": c, "mask": m}
        for t, c, m in zip(targets, composites, masks, strict=True)
    ]
    t = cfg.trainer
    plan_devices, plan_strategy = device_plan(t)  # as train.build_trainer
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=plan_devices,
        strategy=ddp_strategy(t, plan_devices, plan_strategy),
        max_steps=1,
        logger=CSVLogger(out),  # a logger, logging this one step: the terms are computed
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # ContiguousShares deals the samples
        callbacks=[SaveGradients(out)],
    )
    trainer.fit(module, datamodule=ContiguousShares(samples))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
