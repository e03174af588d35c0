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


def test_precompute_array_builds_disjoint_shards(slurm_cluster, tmp_path):
    train = require(SHARED / "data" / "photos" / "train")
    photos = sorted(p for p in train.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    assert len(photos) >= 4, f"fewer than 4 photos under {train}"
    images = tmp_path / "images"
    images.mkdir()
    for p in photos[:4]:
        shutil.copy(p, images / p.name)
    out, logs = tmp_path / "shards", tmp_path / "logs"
    logs.mkdir()

    # 4 photos x 2 crops / 4 per shard = 2 shards, one per array task. The script asks for a
    # GPU and 8 CPUs by default; this cluster has neither, so the header's CPU variant
    # (--gpus-per-task=0 ... --device cpu) with its one CPU per node.
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
            "--gpus-per-task=0",
            "--cpus-per-task=1",
            f"--output={logs}/precompute-%A_%a.log",
        ],
    )
    assert job_records(job)[0].get("TresPerTask") == "gres:gpu:0"
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
