"""slurm/precompute.sbatch on a real two-node SLURM cluster (``-m slurm`` selects these)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from assets import SHARED, require
from slurm_cluster import (  # noqa: F401
    ROOT,
    job_records,
    job_states,
    slurm_cluster_fixture,
    submit,
    wait_for,
)

PRECOMPUTE = ROOT / "slurm" / "precompute.sbatch"
pytestmark = pytest.mark.slurm


def test_cluster_runs_batch_and_two_node_jobs(slurm_cluster, tmp_path):
    """The infrastructure itself: a batch job whose srun step spans both nodes."""
    out = tmp_path / "two-nodes.log"
    job = _sbatch_wrap(
        "srun bash -c 'echo $SLURMD_NODENAME $SLURM_PROCID $SLURM_NODEID'",
        "--nodes=2",
        "--ntasks-per-node=1",
        f"--output={out}",
    )
    assert wait_for(job, timeout=60) == "COMPLETED", out.read_text() if out.exists() else ""
    assert sorted(out.read_text().split("\n")[:2]) == ["n1 0 0", "n2 1 1"]


def _sbatch_wrap(command: str, *options: str) -> str:
    result = subprocess.run(
        ["sbatch", "--parsable", *options, "--wrap", command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().split(";")[0]


def _four_photos(tmp_path) -> tuple:
    """A folder of 4 real photos, the shard folder to build and a log folder."""
    train = require(SHARED / "data" / "photos" / "train")
    photos = sorted(p for p in train.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    assert len(photos) >= 4, f"fewer than 4 photos under {train}"
    images = tmp_path / "images"
    images.mkdir()
    for p in photos[:4]:
        shutil.copy(p, images / p.name)
    out, logs = tmp_path / "shards", tmp_path / "logs"
    logs.mkdir()
    return images, out, logs


def _holds_no_gpu(record: dict) -> bool:
    """Whether a job record asks for no GPU (no gres/gpu in any of its TRES fields)."""
    fields = ("TresPerTask", "TresPerNode", "TresPerJob", "TresPerSocket", "ReqTRES")
    return not any("gpu" in record.get(f, "") for f in fields)


def test_precompute_array_builds_disjoint_shards(slurm_cluster, tmp_path):
    images, out, logs = _four_photos(tmp_path)

    # 4 photos x 2 crops / 4 per shard = 2 shards, one per array task. Artifacts on CPUs as
    # the header says: no GPU option (the script asks for none), --device cpu; 8 CPUs per
    # task by default, and this cluster's nodes have one.
    job = submit(
        PRECOMPUTE,
        images,
        out,
        "--crops-per-image",
        "2",
        "--size",
        "64",
        "--shard-size",
        "4",
        "--device",
        "cpu",
        options=[
            "--array=0-1",
            "--cpus-per-task=1",
            f"--output={logs}/precompute-%A_%a.log",
        ],
    )
    assert all(_holds_no_gpu(r) for r in job_records(job)), job_records(job)
    state = wait_for(job, timeout=300)
    task_logs = {i: logs / f"precompute-{job}_{i}.log" for i in (0, 1)}
    text = {i: p.read_text() if p.exists() else "(no log)" for i, p in task_logs.items()}
    assert state == "COMPLETED", f"{job_states(job)}\n" + "\n".join(text.values())
    assert job_states(job) == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}

    manifest = json.loads((out / "manifest.json").read_text())
    names = sorted(s["name"] for s in manifest["shards"])
    assert manifest["num_shards"] == 2 and names == ["shard-000000.tar", "shard-000001.tar"]
    assert manifest["num_samples"] == 8
    for name in names:
        assert (out / name).stat().st_size == next(
            s["bytes"] for s in manifest["shards"] if s["name"] == name
        )

    # Each task built exactly one shard and they ran as different tasks, so (with both
    # shards complete) each task built a different one; and one of them wrote the manifest.
    assert manifest["recipe"]["device"] == "cpu"
    for i in (0, 1):
        assert f"_{i} " in text[i].splitlines()[0], text[i]
        assert "--workers 1 --crops-per-image" in text[i], text[i]  # one per CPU of the task
        built = re.search(r"built (\d+) shard\(s\).*kept (\d+).* of (\d+) in all", text[i])
        assert built and built.groups() == ("1", "0", "2"), text[i]
    assert sum("manifest: " + str(out / "manifest.json") in t for t in text.values()) >= 1

    from pixperfect.shards.verify import verify

    report = verify(out)
    assert report.ok, report.format()


def test_clean_precompute_asks_for_no_gpu_and_completes(slurm_cluster, tmp_path):
    """A clean build (what the paper's recipe trains from) submitted as docs/cluster.md
    says, with no GPU option and no --device: the array holds no GPU, the script adds
    --device cpu, and both tasks complete a clean folder that verifies."""
    images, out, logs = _four_photos(tmp_path)
    job = submit(
        PRECOMPUTE,
        images,
        out,
        "--kind",
        "clean",
        "--crops-per-image",
        "2",
        "--size",
        "64",
        "--shard-size",
        "4",
        options=["--array=0-1", "--cpus-per-task=1", f"--output={logs}/precompute-%A_%a.log"],
    )
    records = job_records(job)
    assert all(_holds_no_gpu(r) for r in records), records
    state = wait_for(job, timeout=300)
    task_logs = {i: logs / f"precompute-{job}_{i}.log" for i in (0, 1)}
    text = {i: p.read_text() if p.exists() else "(no log)" for i, p in task_logs.items()}
    assert state == "COMPLETED", f"{job_states(job)}\n" + "\n".join(text.values())
    assert job_states(job) == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}
    for i in (0, 1):
        running = next(line for line in text[i].splitlines() if "precompute: running:" in line)
        assert "--device cpu --workers 1" in running and "--kind clean" in running, running

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["kind"] == "clean" and "device" not in manifest["recipe"]
    assert manifest["num_shards"] == 2 and manifest["num_samples"] == 8

    from pixperfect.shards.verify import verify

    report = verify(out)
    assert report.ok, report.format()
