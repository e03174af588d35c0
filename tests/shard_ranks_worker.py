"""One rank of tests/test_shards_ranks.py: a real process in a gloo group that reads its
share of the shards through a DataLoader with loader workers and meets the other ranks in an
all-reduce after every batch, as a DDP step would.

``python shard_ranks_worker.py FOLDER RANK WORLD INIT_FILE OUT RESAMPLE WORKERS BATCH``
writes OUT (JSON): the number of batches, a digest of every target read, and the last
running corrupt-sample count of each loader worker. A rank that ran out of batches early
would leave the others waiting in the all-reduce: the group's timeout turns that into an
error instead of a hang."""

from __future__ import annotations

import datetime
import hashlib
import json
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from pixperfect.shards.format import to_float
from pixperfect.shards.reader import training_stream


def main() -> None:
    folder, rank, world, init, out, resample, workers, batch = sys.argv[1:]
    rank, world, workers, batch = int(rank), int(world), int(workers), int(batch)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    stream = training_stream(
        folder,
        batch,
        rank=rank,
        world_size=world,
        workers=workers,
        seed=5,
        resample=resample == "true",
        epoch_samples=12,
        shuffle_buffer=0 if resample != "true" else 4,
    )
    digests, skipped, batches = [], {}, 0
    for item in DataLoader(stream, batch_size=None, num_workers=workers):
        skipped[int(item["worker_id"])] = int(item["corrupt_skipped"])
        targets = to_float(item)["target"]
        digests += [hashlib.sha1(t.numpy().tobytes()).hexdigest() for t in targets]
        batches += 1
        dist.all_reduce(torch.ones(1))  # the step's collective
    steps = torch.tensor([batches])
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)  # every rank is still there at the end
    result = {"batches": batches, "max_batches": int(steps), "targets": digests}
    result["skipped"] = skipped
    with open(out, "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
