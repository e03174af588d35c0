"""A 2-rank CPU DDP run of tests/test_rank_monitoring.py in which rank 1 is slow.

``python slow_rank_worker.py ROOT SLOW_S``: `pixperfect train`'s ``train()`` on the tiny
demo recipe as two gloo ranks (Lightning's launcher starts rank 1 as a copy of this command,
``LOCAL_RANK=1``), 8 steps logged every 4. On rank 1 only:

- steps 0-3 (the first log window): the generator's forward sleeps SLOW_S (a slow GPU: work
  before the step's first collective, which the other rank waits out);
- steps 4-7 (the second window): the data loader sleeps SLOW_S before each batch (a data
  stall: a slow file system on one node).

Every rank saves the window the monitor gathered from both ranks at each logging step
(``ROOT/windows/rank<r>_<n>.pt``), so the test can compare the logged scalars with both
ranks' own times."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, TINY  # noqa: E402

from pixperfect.config import load_config  # noqa: E402
from pixperfect.training import datamodule, monitor  # noqa: E402
from pixperfect.training.module import RefinerModule  # noqa: E402
from pixperfect.training.train import train  # noqa: E402

WINDOW = 4  # trainer.log_every_n_steps
STEPS = 8


def slow_rank_one(slow_s: float) -> None:
    """Rank 1's slow forward (first window) and data stall (second window)."""
    forward = RefinerModule.generator_forward

    def slow_forward(self, batch, step, generator):
        if step < WINDOW:
            time.sleep(slow_s)
        return forward(self, batch, step, generator)

    RefinerModule.generator_forward = slow_forward
    stream = datamodule.RandomCropStream.__iter__

    def stalling_stream(self):
        # Lightning fetches batch j + 1 before step j starts (one batch ahead), so batch j's
        # stall is step j - 1's wait: batches 5-8 stall steps 4-7. 2 crops per batch.
        for index, item in enumerate(stream(self)):
            if index % 2 == 0 and WINDOW + 1 <= index // 2 <= STEPS:
                time.sleep(slow_s)
            yield item

    datamodule.RandomCropStream.__iter__ = stalling_stream


def save_windows(out: Path, rank: int) -> None:
    reduce = monitor.RankMonitor.reduce
    count = [0]

    def saving_reduce(self, *args, **kwargs):
        scalars = reduce(self, *args, **kwargs)
        torch.save(torch.from_numpy(self.last_gathered), out / f"rank{rank}_{count[0]}.pt")
        count[0] += 1
        return scalars

    monitor.RankMonitor.reduce = saving_reduce


def main(root: Path, slow_s: float) -> None:
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    (root / "windows").mkdir(parents=True, exist_ok=True)
    save_windows(root / "windows", rank)
    if rank == 1:
        slow_rank_one(slow_s)
    overrides = [
        *TINY,
        f"run.root={root}",
        "run.name=slow",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        f"trainer.max_steps={STEPS}",
        f"trainer.log_every_n_steps={WINDOW}",
    ]
    train(load_config(ROOT / "configs" / "demo.yaml", overrides))


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
