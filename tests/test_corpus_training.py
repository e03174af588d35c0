"""Training straight from a webdataset image corpus (``data.source=corpus``): equal batches
per (rank, worker) slot with and without resampling, crops of the crop size, bad samples
skipped and counted by reason, and a 2-rank DDP run on a corpus served over HTTP."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import local_ddp_env, local_ddp_train
from http_server import ShardServer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from pixperfect.corpus import Hygiene
from pixperfect.corpus.images import SKIP_REASONS
from pixperfect.corpus.synthetic import skimage_photos, write_corpus
from pixperfect.data.crops import random_crop
from pixperfect.training.corpus_stream import (
    BY_REASON,
    SeenElsewhere,
    SlotShards,
    corpus_stream,
    skipped_scalars,
    uint8_crop,
)
from pixperfect.training.datamodule import CorpusDataModule, build_datamodule

CROP = 32


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return skimage_photos()


@pytest.fixture(scope="module")
def corpus(photos, tmp_path_factory) -> Path:
    """5 input shards of 6 real JPEGs (shorter side 40 px); the first shard holds a
    truncated JPEG, a tiny image, a PNG-keyed sample and a failed download."""
    out = tmp_path_factory.mktemp("corpus")
    defects = ("truncated", "tiny", "png", "no_image")
    write_corpus(out, photos, shards=5, per_shard=6, side=40, defects=defects)
    return out


def _pattern(folder: Path, shards: int = 5) -> str:
    return f"{folder}/{{00000..{shards - 1:05d}}}.tar"


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _encode(pixels: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(f".{ext}", np.ascontiguousarray(pixels[..., ::-1]))
    assert ok
    return data.tobytes()


def _batches_per_slot(pattern: str, resample: bool, world: int, workers: int, epochs: int):
    """Batches per (rank, worker id) over ``epochs`` iterations of persistent loaders."""
    counts: Counter = Counter()
    for rank in range(world):
        stream = corpus_stream(
            pattern,
            2,
            CROP,
            rank=rank,
            world_size=world,
            workers=workers,
            seed=3,
            resample=resample,
            epoch_samples=12,
            shuffle_buffer=4,
        )
        loader = DataLoader(
            stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0
        )
        for _ in range(epochs):
            for batch in loader:
                counts[(rank, int(batch["worker_id"]))] += 1
    return counts


@pytest.mark.parametrize("resample", [True, False])
def test_every_rank_and_worker_yields_the_same_number_of_batches_per_epoch(corpus, resample):
    # Slot 0 reads the damaged shard (4 of 6 samples skipped), the others do not: the cap
    # evens them out, 12 samples per rank / (2 per batch x 2 workers) = 3 batches each.
    counts = _batches_per_slot(_pattern(corpus), resample, world=2, workers=2, epochs=2)
    assert counts == {(0, 0): 6, (0, 1): 6, (1, 2): 6, (1, 3): 6}


def test_without_resampling_each_slot_reads_its_own_input_shards_once_per_pass():
    urls = [f"s{i}.tar" for i in range(5)]
    passes = {}
    for rank in (0, 1):
        shards = SlotShards(urls, rank, world_size=2, seed=7)
        drawn = [s["url"] for _, s in zip(range(6 if rank == 0 else 4), shards(), strict=False)]
        share = len(urls[rank::2])
        passes[rank] = [drawn[i : i + share] for i in range(0, len(drawn), share)]
        assert all(sorted(p) == urls[rank::2] for p in passes[rank]), passes[rank]
    # Reproducible: the same seed, rank and pass give the same order.
    again = SlotShards(urls, 0, world_size=2, seed=7)
    assert [s["url"] for _, s in zip(range(6), again(), strict=False)] == sum(passes[0], [])


def test_a_new_epoch_goes_on_with_the_pass_instead_of_restarting_it():
    urls = [f"s{i}.tar" for i in range(4)]
    shards = SlotShards(urls, 0, world_size=1, seed=1)
    first = [s["url"] for _, s in zip(range(2), shards(), strict=False)]  # cut by a cap
    second = [s["url"] for _, s in zip(range(2), shards(), strict=False)]  # next epoch
    assert sorted(first + second) == urls


def test_without_resampling_fewer_input_shards_than_slots_is_an_error_naming_the_counts(corpus):
    with pytest.raises(ValueError, match=r"has 2 input shard\(s\) but 2 rank\(s\) x 2 worker"):
        corpus_stream(_pattern(corpus, 2), 2, CROP, world_size=2, workers=2, resample=False)


def test_crops_are_uint8_of_the_crop_size_at_native_and_random_scales(corpus):
    for scale in [(1.0, 1.0), (0.5, 0.9)]:
        stream = corpus_stream(
            _pattern(corpus), 3, CROP, crop_scale=scale, epoch_samples=6, shuffle_buffer=0
        )
        batches = list(stream)
        assert len(batches) == 2
        for batch in batches:
            assert batch["target"].dtype == torch.uint8
            assert batch["target"].shape == (3, 3, CROP, CROP)
            # webdataset's map stage adds "__key__" (None) to shard batches alike
            assert set(batch) - {"__key__"} == {"target", "corrupt_skipped", "worker_id", BY_REASON}


def test_a_native_scale_crop_is_cut_from_the_pixels_as_the_folder_source_cuts_it(photos):
    pixels = photos[0][:50, :70]
    crop = uint8_crop(pixels, CROP, torch.Generator().manual_seed(4), (1.0, 1.0))
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    reference = random_crop(image, CROP, torch.Generator().manual_seed(4))
    assert torch.equal(crop, (reference * 255).round().to(torch.uint8))
    small = uint8_crop(pixels[:20, :20], CROP, torch.Generator().manual_seed(4), (1.0, 1.0))
    assert small.shape == (3, CROP, CROP) and small.dtype == torch.uint8  # upscaled


def test_bad_samples_are_skipped_and_counted_by_reason(photos, tmp_path):
    good = _encode(cv2.resize(photos[1], (48, 40)), "png")
    jpeg = _encode(cv2.resize(photos[2], (48, 40)), "jpg")
    _tar(
        tmp_path / "00000.tar",
        {
            "a.jpg": jpeg[: len(jpeg) // 2],  # truncated: no end marker
            "b.jpg": _encode(cv2.resize(photos[2], (16, 12)), "jpg"),  # too small
            "c.png": good,  # kept: the only image this corpus keeps
            "d.json": b"{}",  # a failed download: no image
            "e.jpg": b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9",  # undecodable
            "f.png": good,  # the same bytes under another key: a duplicate
        },
    )
    (tmp_path / "00001.tar").write_bytes(b"not a tar at all" * 64)  # read_error
    stream = corpus_stream(
        _pattern(tmp_path, 2),
        2,
        CROP,
        hygiene=Hygiene(min_side=CROP, dedupe=True),
        resample=False,
        epoch_samples=6,
        shuffle_buffer=0,
    )
    batches = list(stream)
    assert len(batches) == 3  # 6 crops, all of c.png: one per pass
    counts = dict(zip(SKIP_REASONS, batches[-1][BY_REASON].tolist(), strict=True))
    assert set(counts) == {
        "no_image",
        "truncated",
        "undecodable",
        "too_small",
        "duplicate",
        "read_error",
    }
    # A batch leaves when the next crop is made: the 7th pass's c.png. The samples before
    # it in its shard were read 7 times, those after it 6 (c.png read again in the next
    # pass is no duplicate of itself; f.png, its bytes under another key, is).
    assert counts["truncated"] == counts["too_small"] == 7
    assert counts["no_image"] == counts["undecodable"] == counts["duplicate"] == 6
    assert counts["read_error"] >= 6
    assert int(batches[-1]["corrupt_skipped"]) == sum(counts.values())


def test_dedupe_skips_the_same_bytes_under_another_key_not_the_same_sample_read_again():
    seen = SeenElsewhere()
    seen.origin = "s0.tar\0a"
    assert not seen.add(b"photo")
    assert not seen.add(b"photo")  # the shard read again (next pass, drawn again)
    seen.origin = "s1.tar\0b"
    assert seen.add(b"photo")
    assert not seen.add(b"another photo")


def test_a_slot_that_keeps_no_image_in_a_whole_pass_stops_with_an_error(photos, tmp_path):
    tiny = _encode(cv2.resize(photos[0], (16, 12)), "jpg")
    _tar(tmp_path / "00000.tar", {"a.jpg": tiny, "b.jpg": tiny[::-1]})
    stream = corpus_stream(str(tmp_path / "00000.tar"), 2, CROP, resample=False)
    with pytest.raises(RuntimeError, match="kept no image.*too_small.*data.min_side"):
        next(iter(stream))


def test_skipped_scalars_sum_the_latest_counts_of_every_worker():
    ones = torch.ones(len(SKIP_REASONS), dtype=torch.long)
    scalars = skipped_scalars({0: ones, 3: 2 * ones})
    assert scalars == {f"data/skipped_{r}": 3.0 for r in SKIP_REASONS}
    assert skipped_scalars({}) == {}


def test_the_corpus_source_builds_the_corpus_datamodule_with_held_out_validation(tiny_config):
    cfg = tiny_config("data.source=corpus", "data.corpus=/c/{00000..00001}.tar")
    module = build_datamodule(cfg)
    assert isinstance(module, CorpusDataModule)
    module.setup()
    assert len(module.val_samples) == len(cfg.data.holdout) * cfg.data.val_samples_per_image


def _scalar(event_file: Path, tag: str) -> list[float]:
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_a_two_rank_run_trains_from_a_corpus_served_over_http_and_checkpoints(photos, tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(
        corpus, photos, shards=2, per_shard=8, side=40, defects=("truncated", "tiny", "png")
    )
    server = ShardServer({"corpus": corpus})
    try:
        result = subprocess.run(
            local_ddp_train(
                tmp_path / "runs",
                "corpus",
                "data.source=corpus",
                f"data.corpus={server.url}/corpus/{{00000..00001}}.tar",
                "data.resample=false",  # rank 0 reads the damaged shard 00000, rank 1 00001
                "data.num_workers=1",
                "data.shuffle_buffer=0",
                "trainer.max_steps=2",
            ),
            capture_output=True,
            text=True,
            env=local_ddp_env(),
            timeout=300,
        )
    finally:
        server.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Starting with 2 processes" in output
    assert server.tar_requests >= 2  # both input shards were read over HTTP
    run = tmp_path / "runs" / "corpus"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    (events,) = (run / "tb").glob("events.out.tfevents.*")
    # Summed over both ranks at each logged step: rank 0 skipped its shard's truncated JPEG
    # and tiny image before its first batch and made both batches from one pass of its 8
    # samples (the PNG-keyed one kept); rank 1's shard is whole.
    assert _scalar(events, "data/skipped_truncated") == [1.0, 1.0]
    assert _scalar(events, "data/skipped_too_small") == [1.0, 1.0]
    assert _scalar(events, "data/skipped_undecodable") == [0.0, 0.0]
    assert _scalar(events, "data/corrupt_skipped") == [2.0, 2.0]


def test_too_few_input_shards_for_exactly_once_is_refused_at_launch_naming_the_counts(tmp_path):
    from pixperfect.config import load_config
    from pixperfect.training.train import check_data

    pattern = str(tmp_path / "{00000..00002}.tar")  # listed, never opened
    cfg = load_config(
        None,
        [f"data.corpus={pattern}", "data.source=corpus", "data.resample=false"]
        + ["data.num_workers=2", "trainer.devices=2"],
    )
    with pytest.raises(ValueError, match=r"has 3 input shard\(s\) but 2 rank\(s\) x 2 worker"):
        check_data(cfg)
