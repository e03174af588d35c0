"""Data across launches: a resumed run draws new batches instead of replaying the first
ones, and two runs with the same seed are identical on CPU (batches and weights), from
photos and from shards read by two loader workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import pytest
import torch
from assets import SHARED, require

import pixperfect.training.train as train_code
from pixperfect.shards.build import BuildSpec, build

TRAIN = SHARED / "data" / "photos" / "train" / "cbsd68"


class RecordTargets(L.Callback):
    """The digest of every training batch's targets, as the step receives them."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.digests.append(hashlib.sha1(batch["target"].numpy().tobytes()).hexdigest())


@pytest.fixture
def recorded(monkeypatch):
    """Runs ``train`` with a :class:`RecordTargets` on its trainer; returns (digests,
    last checkpoint's state dict)."""
    build_trainer = train_code.build_trainer

    def run(cfg) -> tuple[list[str], dict[str, torch.Tensor]]:
        recorder = RecordTargets()

        def build_with_recorder(*args, **kw) -> L.Trainer:
            trainer = build_trainer(*args, **kw)
            trainer.callbacks.append(recorder)
            return trainer

        monkeypatch.setattr(train_code, "build_trainer", build_with_recorder)
        directory = train_code.train(cfg)
        ckpt = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
        return recorder.digests, ckpt["state_dict"]

    return run


@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory) -> Path:
    sources = [str(p) for p in sorted(require(TRAIN).glob("*.png"))[:6]]
    out = tmp_path_factory.mktemp("clean")
    build(BuildSpec(sources=sources, kind="clean", size=32, crops_per_image=4, shard_size=4), out,
          progress=False)  # fmt: skip
    return out


@pytest.fixture(params=["photos", "shards"])
def source(request, clean_shards) -> list[str]:
    if request.param == "photos":
        return ["data.source=skimage"]
    return ["data.source=shards", f"data.shards={clean_shards}", "data.num_workers=2",
            "data.shuffle_buffer=8", "data.epoch_samples=8"]  # fmt: skip


def test_two_runs_with_the_same_seed_read_the_same_batches_and_end_with_the_same_weights(
    recorded, tiny_config, source
):
    common = [*source, "run.seed=7", "trainer.max_steps=4"]
    batches_a, weights_a = recorded(tiny_config(*common, "run.name=a"))
    batches_b, weights_b = recorded(tiny_config(*common, "run.name=b"))
    assert len(batches_a) == 4 and batches_a == batches_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # ...and the seed matters: another seed, other batches.
    batches_c, _ = recorded(tiny_config(*source, "run.seed=8", "trainer.max_steps=4",
                                        "run.name=c"))  # fmt: skip
    assert not set(batches_c) & set(batches_a)


def test_a_resumed_run_draws_new_batches_instead_of_replaying_the_first_ones(
    recorded, tiny_config, source
):
    first, _ = recorded(tiny_config(*source, "trainer.max_steps=3", "run.name=r"))
    resumed, _ = recorded(tiny_config(*source, "trainer.max_steps=6", "run.name=r"))
    assert len(first) == 3 and len(resumed) == 3  # steps 3..5 only: it resumed
    assert not set(resumed) & set(first)
