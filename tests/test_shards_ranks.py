"""Shards read by real DDP processes: 2 gloo ranks x 2 loader workers, each rank its own
process, over uneven shard counts (5 and 7 shards), with and without resampling; and the
corrupt-sample count of a real two-rank training run in TensorBoard."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from assets import SHARED, require
from conftest import ROOT, local_ddp_env, local_ddp_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from pixperfect.shards.build import BuildSpec, build, shard_name
from pixperfect.shards.reader import epoch_plan, read_all, training_stream

WORKER = Path(__file__).parent / "shard_ranks_worker.py"
TRAIN = SHARED / "data" / "photos" / "train" / "cbsd68"
RANKS, WORKERS, BATCH = 2, 2, 2


def _build(out: Path, photos: int, crops: int, shard_size: int) -> Path:
    sources = [str(p) for p in sorted(require(TRAIN).glob("*.png"))[:photos]]
    spec = BuildSpec(
        sources=sources, kind="clean", size=32, crops_per_image=crops, shard_size=shard_size
    )
    build(spec, out, progress=False)
    return out


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> dict[int, Path]:
    """5 shards of 2 samples (10) and 7 shards of 3 (21): neither splits evenly over
    2 ranks x 2 workers x batches of 2."""
    root = tmp_path_factory.mktemp("uneven")
    return {5: _build(root / "five", 5, 2, 2), 7: _build(root / "seven", 7, 3, 3)}


def _digest(target: torch.Tensor) -> str:
    return hashlib.sha1(target.numpy().tobytes()).hexdigest()


def _read_with_ranks(folder: Path, tmp: Path, resample: bool) -> list[dict]:
    """Both ranks as separate processes in one gloo group; their JSON results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    init = tmp / f"init-{folder.name}-{resample}"
    outs = [tmp / f"rank{r}-{folder.name}-{resample}.json" for r in range(RANKS)]

    def argv(rank: int) -> list[str]:
        args = [folder, rank, RANKS, init, outs[rank], str(resample).lower(), WORKERS, BATCH]
        return [sys.executable, str(WORKER), *map(str, args)]

    options = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [subprocess.Popen(argv(rank), **options) for rank in range(RANKS)]
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output[-3000:]
    return [json.loads(out.read_text()) for out in outs]


@pytest.mark.parametrize("num_shards", [5, 7])
def test_resampling_ranks_in_separate_processes_step_equally_without_a_hang(
    uneven, tmp_path, num_shards
):
    results = _read_with_ranks(uneven[num_shards], tmp_path, resample=True)
    # epoch_samples=12 per rank in batches of 2: 6 batches, 3 from each loader worker.
    assert [r["batches"] for r in results] == [6, 6]
    assert all(r["max_batches"] == 6 for r in results)
    assert [sorted(r["skipped"]) for r in results] == [["0", "1"], ["2", "3"]]  # worker ids


@pytest.mark.parametrize("num_shards", [5, 7])
def test_without_resampling_each_sample_is_read_once_and_only_the_stated_tail_is_dropped(
    uneven, tmp_path, num_shards
):
    folder = uneven[num_shards]
    results = _read_with_ranks(folder, tmp_path, resample=False)
    every = [_digest(s["target"]) for s in read_all(folder)]  # manifest order
    slots = RANKS * WORKERS
    kept = BATCH * (len(every) // (slots * BATCH)) * slots  # README "Reading shards"
    seen = [d for r in results for d in r["targets"]]
    assert len(seen) == len(set(seen)) == kept  # each read exactly once
    assert set(seen) == set(every[:kept])  # the first `kept` in manifest order...
    assert not set(seen) & set(every[kept:])  # ...and none of the dropped tail
    assert [r["batches"] for r in results] == [kept // (RANKS * BATCH)] * RANKS
    assert len(every) - kept == {5: 2, 7: 5}[num_shards]


def test_the_epoch_plan_gives_every_slot_the_same_contiguous_share():
    plan = epoch_plan([3, 3, 3, 3, 3, 3, 3], slots=4, batch_size=2)
    assert plan == [
        [(0, 0, 3), (1, 0, 1)],
        [(1, 1, 3), (2, 0, 2)],
        [(2, 2, 3), (3, 0, 3)],
        [(4, 0, 3), (5, 0, 1)],
    ]  # 4 per slot; shard 5's last two and shard 6 (5 samples) are the dropped tail


def _corrupt_first_target(path: Path) -> None:
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    bad = members[0][0].name.split(".")[0] + ".target.png"
    with tarfile.open(path, "w") as tar:
        for member, payload in members:
            if member.name == bad:
                payload = b"not a png at all"
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))


def _expected_corrupt_sum(folder: Path, steps: int) -> tuple[float, dict]:
    """What TensorBoard must show after ``steps`` steps: per rank, read its stream as the
    run does (2 workers, in step order), keep each worker's latest running count; sum all."""
    counts = {}
    for rank in range(RANKS):
        stream = training_stream(
            folder, BATCH, rank=rank, world_size=RANKS, workers=WORKERS, resample=False,
            shuffle_buffer=0,
        )  # fmt: skip
        loader = DataLoader(stream, batch_size=None, num_workers=WORKERS)
        for step, batch in enumerate(loader):
            if step == steps:
                break
            counts[int(batch["worker_id"])] = int(batch["corrupt_skipped"])
    return float(sum(counts.values())), counts


def test_the_corrupt_count_in_tensorboard_sums_every_worker_of_every_rank(uneven, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(uneven[7], folder)
    # epoch_plan: slot 0 (rank 0, worker 0) reads shard 0 and 1, slot 1 shards 1 and 2,
    # slot 2 (rank 1, worker 0) shards 2 and 3, slot 3 shards 4 and 5.
    truncated = folder / shard_name(1)
    truncated.write_bytes(truncated.read_bytes()[:9000])  # in its 2nd sample
    _corrupt_first_target(folder / shard_name(3))
    _corrupt_first_target(folder / shard_name(4))
    steps = 4
    expected, per_worker = _expected_corrupt_sum(folder, steps)
    ranks_hit = {worker // WORKERS for worker, n in per_worker.items() if n}
    assert ranks_hit == {0, 1} and sum(1 for n in per_worker.values() if n) >= 3  # telling

    env = local_ddp_env()
    result = subprocess.run(
        local_ddp_train(tmp_path, "corrupt", "data.source=shards", f"data.shards={folder}",
         f"data.num_workers={WORKERS}", f"data.batch_size={BATCH}", "data.resample=false",
         "data.shuffle_buffer=0", f"trainer.max_steps={steps}"),
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    events = EventAccumulator(str(tmp_path / "corrupt" / "tb")).Reload()
    logged = events.Scalars("data/corrupt_skipped")
    assert logged[-1].step == steps - 1
    assert logged[-1].value == expected, per_worker
