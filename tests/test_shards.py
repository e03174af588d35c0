"""Shards: build, resume, verify, and read them into training (tiny shards from real photos)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from assets import SHARED, require
from helpers import manifest_of
from torch.utils.data import DataLoader

from pixperfect.cli import main
from pixperfect.shards.build import BuildSpec, build, shard_name
from pixperfect.shards.format import to_float
from pixperfect.shards.reader import check_enough_shards, read_all, training_stream
from pixperfect.shards.verify import verify

TRAIN = SHARED / "data" / "photos" / "train" / "cbsd68"


def _photos(n: int = 4) -> list[str]:
    return [str(p) for p in sorted(require(TRAIN).glob("*.png"))[:n]]


def _spec(**kw) -> BuildSpec:
    args = dict(sources=_photos(), size=32, crops_per_image=2, shard_size=2, seed=3)
    return BuildSpec(**{**args, **kw})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """4 photos x 2 crops, 2 samples per shard: 4 artifact shards."""
    out = tmp_path_factory.mktemp("shards")
    build(_spec(), out, progress=False)
    return out


def test_manifest_records_counts_bytes_checksums_and_recipe(shards):
    manifest = manifest_of(shards)
    assert manifest["num_shards"] == 4 and manifest["num_samples"] == 8
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 2, 2]
    for entry in manifest["shards"]:
        assert (shards / entry["name"]).stat().st_size == entry["bytes"]
        assert len(entry["sha256"]) == 64
    assert manifest["recipe"]["size"] == 32 and len(manifest["recipe_hash"]) == 64
    assert manifest["version"] and manifest["seed"] == 3
    assert not list(shards.glob("*.partial"))


def test_each_sample_holds_target_composite_mask_alpha_and_params(shards):
    with tarfile.open(shards / shard_name(0)) as tar:
        names = sorted(tar.getnames())
    key = names[0].split(".")[0]
    assert {n.split(".", 1)[1] for n in names if n.startswith(key)} == {
        "alpha.png",
        "composite.png",
        "mask.png",
        "params.json",
        "target.png",
    }
    sample = read_all(shards)[0]
    assert sample["composite"].shape == (3, 32, 32) and sample["mask"].shape == (1, 32, 32)


def test_rerun_keeps_complete_shards_and_rebuilds_missing_ones_identically(shards, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    kept = (out / shard_name(0)).stat().st_mtime_ns
    (out / shard_name(2)).unlink()
    (out / "manifest.json").unlink()
    summary = build(_spec(), out, progress=False)
    assert summary["built"] == 1 and summary["kept"] == 3
    assert (out / shard_name(0)).stat().st_mtime_ns == kept
    assert manifest_of(out) == manifest_of(shards)


def test_a_different_recipe_in_the_same_folder_is_refused(shards, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    with pytest.raises(ValueError, match="another recipe.*size"):
        build(_spec(size=48), out, progress=False)


def test_shards_of_another_simulator_version_are_not_resumed(shards, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    monkeypatch.setattr("pixperfect.shards.recipe.SIM_VERSION", 999)
    with pytest.raises(ValueError, match=r"differs in: sim_version\) \(built by another version"):
        build(_spec(), out, progress=False)
    # Clean crops do not depend on the simulator: no version in their recipe.
    assert "sim_version" not in _spec(kind="clean").recipe()


def test_array_tasks_build_disjoint_shards_and_the_last_writes_the_manifest(shards, tmp_path):
    first = build(_spec(), tmp_path, task_index=0, num_tasks=2, progress=False)
    assert first["built"] == 2 and first["manifest"] is None
    assert {p.name for p in tmp_path.glob("shard-*.tar")} == {shard_name(0), shard_name(2)}
    second = build(_spec(), tmp_path, task_index=1, num_tasks=2, progress=False)
    assert second["manifest"] is not None
    assert manifest_of(tmp_path) == manifest_of(shards)


def test_worker_processes_give_the_same_shards(shards, tmp_path):
    build(_spec(), tmp_path, workers=2, progress=False)
    assert manifest_of(tmp_path) == manifest_of(shards)


def test_a_killed_build_resumes_to_the_manifest_of_an_uninterrupted_one(tmp_path):
    photos = tmp_path / "photos.txt"
    photos.write_text("\n".join(_photos(6)))
    args = [
        "shards", "build", "--images", str(photos), "--size", "64", "--crops-per-image", "4",
        "--shard-size", "2", "--seed", "5",
    ]  # fmt: skip
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main([*args, "--out", str(reference)]) == 0
    cli = [sys.executable, "-m", "pixperfect.cli", *args, "--out", str(killed)]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(killed.glob("shard-*.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(killed.glob("shard-*.json"))
    assert done and len(done) < 12, "the build was not interrupted midway"
    assert not (killed / "manifest.json").exists()
    for tar in killed.glob("shard-*.tar"):  # a shard name is only ever a complete tar
        with tarfile.open(tar) as t:
            assert len(t.getnames()) == 10
    assert main([*args, "--out", str(killed)]) == 0
    assert manifest_of(killed) == manifest_of(reference)


def _damage(folder: Path) -> tuple[str, str]:
    """Truncate shard 1 and replace one sample's composite in shard 3 with garbage; returns
    (truncated shard name, corrupt sample key)."""
    truncated = folder / shard_name(1)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    path = folder / shard_name(3)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    bad_key = members[0][0].name.split(".")[0]
    with tarfile.open(path, "w") as tar:
        for member, payload in members:
            if member.name == f"{bad_key}.composite.png":
                payload = b"not a png at all"
                member.size = len(payload)
            tar.addfile(member, __import__("io").BytesIO(payload))
    return shard_name(1), bad_key


@pytest.fixture
def damaged(shards, tmp_path) -> tuple[Path, str, str]:
    out = tmp_path / "damaged"
    shutil.copytree(shards, out)
    return (out, *_damage(out))


def test_verify_passes_intact_shards(shards):
    report = verify(shards, progress=False)
    assert report.ok, report.format()
    assert sum(s.decoded for s in report.shards) == 8


def test_verify_names_a_truncated_shard_and_a_corrupt_sample(damaged, capsys):
    folder, truncated, bad_key = damaged
    report = verify(folder, progress=False)
    assert not report.ok
    by_name = {s.name: s for s in report.shards}
    assert any(
        "unreadable tar" in p or "samples, manifest" in p for p in by_name[truncated].problems
    )
    assert any(bad_key in p for p in by_name[shard_name(3)].problems)
    assert not by_name[shard_name(0)].problems
    assert main(["shards", "verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert truncated in out and bad_key in out and "FAILED" in out


def test_verify_of_an_unfinished_build_says_how_to_finish_it(tmp_path):
    report = verify(tmp_path, progress=False)
    assert not report.ok and "rerun `pixperfect shards build`" in report.format()


def _batches(folder: Path, rank: int, world: int, workers: int, **kw) -> list[dict]:
    stream = training_stream(
        folder, kw.pop("batch_size", 2), rank=rank, world_size=world, workers=workers, **kw
    )
    return [to_float(b) for b in DataLoader(stream, batch_size=None, num_workers=workers)]


def test_two_ranks_with_two_workers_get_the_same_number_of_batches(shards):
    counts = [
        len(_batches(shards, rank, 2, 2, epoch_samples=12, shuffle_buffer=4)) for rank in (0, 1)
    ]
    assert counts == [6, 6]  # 12 samples per rank in batches of 2, however the shards fall


def test_without_resampling_the_ranks_cover_every_sample_exactly_once(shards):
    seen = []
    for rank in (0, 1):
        for batch in _batches(shards, rank, 2, 2, resample=False, shuffle_buffer=0):
            seen += [hash(t.numpy().tobytes()) for t in batch["target"]]
    every = [hash(s["target"].numpy().tobytes()) for s in read_all(shards)]
    assert sorted(seen) == sorted(every) and len(set(every)) == 8


def test_the_reader_skips_and_counts_corrupt_data_instead_of_dying(damaged):
    folder = damaged[0]
    batches = _batches(folder, 0, 1, 0, batch_size=1, resample=False, shuffle_buffer=0)
    # Of 8 samples, shard 1 lost at least one to truncation and shard 3 one to corruption;
    # the rank still yields its full 8 batches (the stream wraps around), so DDP ranks stay
    # in step.
    unique = {hash(b["target"].numpy().tobytes()) for b in batches}
    assert len(batches) == 8 and 5 <= len(unique) <= 6
    assert int(batches[-1]["corrupt_skipped"]) >= 2


def test_too_few_shards_for_workers_times_ranks_is_refused_before_launch(shards, tiny_config):
    with pytest.raises(ValueError, match=r"4 shard\(s\) but 2 rank\(s\) x 3 worker\(s\)"):
        check_enough_shards(shards, workers=3, world_size=2)
    from pixperfect.training.run_folder import run_dir
    from pixperfect.training.train import train

    cfg = tiny_config("data.source=shards", f"data.shards={shards}", "data.num_workers=5")
    with pytest.raises(ValueError, match="need at least 5"):
        train(cfg)
    assert not run_dir(cfg).exists()


def test_training_from_shards_counts_corrupt_data_in_tensorboard(damaged, tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pixperfect.training.train import train

    cfg = tiny_config(
        "data.source=shards",
        f"data.shards={damaged[0]}",
        # the shards' recipe (sim={}: the defaults), not demo.yaml's mix: train refuses others
        "sim.mix.nearly_right_p=0",
        "sim.mix.clean_p=0",
        "data.shuffle_buffer=0",
        "data.epoch_samples=16",
        "trainer.max_steps=8",
    )
    directory = train(cfg)
    events = EventAccumulator(str(directory / "tb")).Reload()
    assert max(e.value for e in events.Scalars("data/corrupt_skipped")) >= 1
    assert (directory / "contact_sheet.png").is_file()


def test_clean_shards_hold_targets_and_train_with_artifacts_made_on_the_fly(tmp_path, tiny_config):
    from pixperfect.training.train import train

    build(_spec(kind="clean"), tmp_path / "clean", progress=False)
    sample = read_all(tmp_path / "clean")[0]
    assert set(sample) == {"__key__", "target"}
    cfg = tiny_config("data.source=shards", f"data.shards={tmp_path / 'clean'}")
    assert (train(cfg) / "checkpoints" / "last.ckpt").is_file()


def test_source_folders_convert_grey_rgba_16_bit_and_skip_unreadable_and_small(tmp_path):
    from pixperfect.shards.sources import resolve_sources

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "grey.png"), rng.integers(0, 255, (40, 50), dtype=np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 255, (40, 50, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "deep.png"), rng.integers(0, 65535, (40, 50, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "tiny.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    spec = BuildSpec(
        sources=resolve_sources(str(folder)), size=32, crops_per_image=1, shard_size=8,
        small_images="skip",
    )  # fmt: skip
    build(spec, tmp_path / "out", progress=False)
    manifest = manifest_of(tmp_path / "out")
    assert manifest["num_samples"] == 3
    # Counted per reason, with a few example lines (no list of every photo).
    assert manifest["skipped"] == {"too_small": 1, "undecodable": 1}
    examples = "\n".join(manifest["skip_examples"])
    assert (
        "broken.jpg: unreadable" in examples and "tiny.png: 16x16 is smaller than 32px" in examples
    )
    samples = read_all(tmp_path / "out")
    assert all(s["target"].shape == (3, 32, 32) for s in samples)


def test_upscaling_small_images_keeps_them(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "tiny.png"), np.full((16, 20, 3), 128, np.uint8))
    spec = BuildSpec(sources=[str(folder / "tiny.png")], size=32, crops_per_image=2)
    build(spec, tmp_path / "out", progress=False)
    assert manifest_of(tmp_path / "out")["num_samples"] == 2


def test_the_cli_builds_from_a_folder_and_refuses_bad_options(tmp_path, capsys):
    assert main(["shards", "build", "--images", str(tmp_path / "none"), "--out", "x"]) == 2
    assert "expected a photo folder" in capsys.readouterr().err
    assert os.environ.get("SLURM_ARRAY_TASK_ID") is None
    code = main(
        ["shards", "build", "--images", str(require(TRAIN)), "--out", str(tmp_path / "o"),
         "--task-index", "3", "--num-tasks", "2"]
    )  # fmt: skip
    assert code == 2 and "--task-index 3" in capsys.readouterr().err


def test_the_stream_carries_uint8_that_to_float_turns_into_the_stored_floats(shards):
    batch = next(iter(training_stream(shards, 2, resample=False, shuffle_buffer=0)))
    assert batch["composite"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint8
    first = to_float(batch)
    stored = read_all(shards)[:2]
    for key in ("target", "composite", "mask", "alpha"):
        assert first[key].dtype == torch.float32
        assert torch.equal(first[key], torch.stack([s[key] for s in stored])), key
    assert set(first["mask"].unique().tolist()) <= {0.0, 1.0}


def test_webp_shards_decode_to_the_pixels_written(tmp_path):
    build(_spec(image_format="webp", shard_size=8), tmp_path / "webp", progress=False)
    build(_spec(shard_size=8), tmp_path / "png", progress=False)
    for a, b in zip(read_all(tmp_path / "webp"), read_all(tmp_path / "png"), strict=True):
        assert a.pop("__key__") == b.pop("__key__")
        assert a.pop("families") == b.pop("families")  # from params.json: a string
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_device_auto_resolves_here_and_the_recipe_records_the_kind(shards, tmp_path):
    from pixperfect.shards.build import resolve_device

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == kind and resolve_device("cpu") == "cpu"
    summary = build(_spec(device="auto"), tmp_path, progress=False)
    assert summary["device"] == kind and summary["seconds"] > 0
    assert manifest_of(tmp_path)["recipe"]["device"] == kind
    if kind == "cpu":  # --device auto on a CPU machine is --device cpu, the default
        assert manifest_of(tmp_path) == manifest_of(shards)
    # Clean crops are made on the CPU whatever the device: no device in their recipe.
    assert "device" not in _spec(kind="clean", device="cuda").recipe()
    assert _spec(device="cuda").recipe_hash() != _spec().recipe_hash()


def test_a_folder_begun_on_cuda_is_not_resumed_on_cpu(tmp_path):
    from pixperfect.shards.build import _check_plan

    _check_plan(_spec(device="cuda"), tmp_path)  # the plan a CUDA build writes first
    assert json.loads((tmp_path / "plan.json").read_text())["recipe"]["device"] == "cuda"
    with pytest.raises(ValueError) as refused:
        build(_spec(), tmp_path, device="cpu", progress=False)
    message = str(refused.value)
    assert "built on cuda, this build runs on cpu" in message
    assert "random noise differs between device kinds" in message
    assert "--device cuda" in message and "new --out" in message
    assert not list(tmp_path.glob("shard-*"))


def test_a_plan_from_before_the_device_option_resumes_on_cpu(shards, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    plan = json.loads((out / "plan.json").read_text())
    del plan["recipe"]["device"]  # as written before the recipe recorded the device
    text = json.dumps(plan["recipe"], sort_keys=True, separators=(",", ":"))
    plan["recipe_hash"] = hashlib.sha256(text.encode()).hexdigest()
    (out / "plan.json").write_text(json.dumps(plan))
    (out / shard_name(1)).unlink()
    summary = build(_spec(), out, progress=False)
    assert summary["built"] == 1 and summary["kept"] == 3
    assert manifest_of(out) == manifest_of(shards)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_and_unknown_devices_are_refused(tmp_path, capsys):
    from pixperfect.shards.build import resolve_device

    with pytest.raises(ValueError, match=r"--device cuda: CUDA is not available.*--device cpu"):
        build(_spec(), tmp_path, device="cuda", progress=False)
    with pytest.raises(ValueError, match=r"--device 'tpu': choose one of auto, cpu, cuda"):
        resolve_device("tpu")
    assert not list(tmp_path.iterdir())
    code = main(
        ["shards", "build", "--images", str(require(TRAIN)), "--out", str(tmp_path / "o"),
         "--device", "cuda"]
    )  # fmt: skip
    assert code == 2 and "--device cuda: CUDA is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shards", "build", "--images", "skimage", "--out", "o", "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_the_cli_takes_a_device_and_reports_samples_per_second(tmp_path, capsys):
    photos = tmp_path / "photos.txt"
    photos.write_text("\n".join(_photos(2)))
    args = ["shards", "build", "--images", str(photos), "--size", "32", "--crops-per-image", "1"]
    assert main([*args, "--shard-size", "2", "--device", "auto", "--out", str(tmp_path / "o")]) == 0
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    out = capsys.readouterr().out
    assert re.search(
        rf"built 1 shard\(s\) \(2 samples\) in [\d.]+ s, [\d.]+ samples/s on {kind};", out
    )
    assert manifest_of(tmp_path / "o")["recipe"]["device"] == kind


def test_cuda_builds_run_deterministic_algorithms_and_restore_the_callers_setting(monkeypatch):
    from pixperfect.shards.build import deterministic

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic("cpu"):
        assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    try:
        with deterministic("cuda"):  # switches settings only: no CUDA work is needed here
            assert torch.are_deterministic_algorithms_enabled()
            assert not torch.backends.cudnn.benchmark
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert not torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        with deterministic("cuda"):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
