"""A two-rank training run (``pixperfect.training.train.train``, Lightning's DDP launcher
starts rank 1 as a copy of this command) in which one rank alone sees a non-finite loss:
the discriminator's on rank 1 at batch 1, the generator's on rank 0 at batch 3. For
tests/test_nonfinite_ddp.py. ``python nonfinite_worker.py ROOT``: every rank writes
``ROOT/rank<r>.json``, one record per batch (skipped count, D steps, sums of D and G
weights)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, TINY  # noqa: E402

import pixperfect.training.objective as objective_code  # noqa: E402
import pixperfect.training.train as train_code  # noqa: E402
from pixperfect.config import load_config  # noqa: E402
from pixperfect.training.objective import Objective  # noqa: E402

POISON_D = (1, 1)  # (batch, rank): the discriminator loss is NaN there only
POISON_G = (3, 0)  # (batch, rank): the generator loss is NaN there only
MAX_STEPS = 5
batch_now = -1


def _weights_sum(net: torch.nn.Module) -> float:
    return float(sum(p.double().sum() for p in net.parameters()))


class Record(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.rows = out, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        global batch_now
        batch_now = batch_idx

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.rows.append(
            {
                "batch": batch_idx,
                "skipped": int(module.skipped_steps),
                "d_steps": module._d_steps,
                "d": _weights_sum(module.discriminator),
                "g": _weights_sum(module.generator),
            }
        )

    def on_train_end(self, trainer, module) -> None:
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))


def poison_d(real_loss):
    def loss(*args, rank: int = 0, **kw):
        parts = real_loss(*args, rank=rank, **kw)
        if (batch_now, rank) == POISON_D:
            return parts._replace(loss=parts.loss * float("nan"))
        return parts

    return loss


def poison_g(real_terms):
    def terms(self, *args, rank: int = 0, **kw):
        out = real_terms(self, *args, rank=rank, **kw)
        if (batch_now, rank) == POISON_G:
            out = dataclasses.replace(out, terms={**out.terms, "loss": out.loss * float("inf")})
        return out

    return terms


def main(root: Path) -> None:
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        [
            *TINY,
            f"run.root={root}",
            "run.name=nonfinite",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            f"trainer.max_steps={MAX_STEPS + 1}",  # batches 0..5 (a skipped step counts)
            "loss.adversarial=0.1",
            "gan.warmup_steps=0",
            "gan.base_channels=4",
            "gan.n_down=2",
            "optim.ema_decay=0",
        ],
    )
    objective_code.discriminator_loss = poison_d(objective_code.discriminator_loss)
    Objective.generator_terms = poison_g(Objective.generator_terms)
    build = train_code.build_trainer

    def build_with_record(*args, **kw) -> L.Trainer:
        trainer = build(*args, **kw)
        trainer.callbacks.append(Record(root))
        return trainer

    train_code.build_trainer = build_with_record
    train_code.train(cfg)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
