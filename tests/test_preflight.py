"""``pixperfect preflight``: every ``sbatch ... slurm/train.sbatch`` and ``pixperfect
preflight`` command in the README, docs/*.md, the configs and the scripts' headers passes
where what it names is staged, and fails listing each missing thing with its fix where it
is not."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from assets import TAESD_DIR, require
from conftest import ROOT

from pixperfect.config import load_config
from pixperfect.preflight import preflight
from pixperfect.training.cluster import bound_devices, device_plan

DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "slurm").glob("*.sbatch")),
    *ROOT.glob("configs/*.yaml"),
]


def _commands(path: Path) -> list[str]:
    """Shell commands in ``path`` (comment markers stripped, continuation lines joined),
    and the inline code spans of a markdown page (a synopsis with ``[``, ``|`` or ``...``
    is not a launch)."""
    lines = [re.sub(r"^#\s?", "", line) for line in path.read_text().splitlines()]
    text = "\n".join(lines).replace("\\\n", " ")
    spans = re.findall(r"`([^`\n]+)`", text) if path.suffix == ".md" else []
    spans = [s for s in spans if not re.search(r"\[|\||\.\.\.", s)]
    return [line.strip() for line in text.splitlines()] + spans


def documented_launches() -> list[tuple[str, str, list[str], int, int]]:
    """(where, command, preflight args, nodes, ranks per node) for each documented launch."""
    found = []
    for path in DOCS:
        for line in _commands(path):
            line = line.strip("`")
            if line.startswith("sbatch ") and "slurm/train.sbatch" in line:
                words = shlex.split(line)
                script = words.index("slurm/train.sbatch")
                options = dict(w[2:].split("=", 1) for w in words[1:script] if "=" in w)
                nodes = int(options.get("nodes", 1))
                per_node = int(options.get("ntasks-per-node", 1))
                found.append((path.name, line, words[script + 1 :], nodes, per_node))
            elif line.startswith("pixperfect preflight "):
                words = shlex.split(line)[2:]
                nodes = int(words[words.index("--nodes") + 1]) if "--nodes" in words else 1
                per_node = (
                    int(words[words.index("--gpus-per-node") + 1])
                    if "--gpus-per-node" in words
                    else 1
                )
                args = [
                    w
                    for i, w in enumerate(words)
                    if w not in ("--nodes", "--gpus-per-node")
                    and (i == 0 or words[i - 1] not in ("--nodes", "--gpus-per-node"))
                ]
                found.append((path.name, line, args, nodes, per_node))
    return found


LAUNCHES = documented_launches()


def test_the_docs_show_the_paper_launch_on_gpus_and_the_cpu_launch():
    lines = [launch[1] for launch in LAUNCHES]
    assert any("configs/paper.yaml" in c and "--gpus-per-node=8" in c for c in lines)
    # --gpus-per-node is the one documented GPU binding (--gpus-per-task costs NCCL its P2P)
    assert not any("--gpus-per-task" in c for c in lines)
    assert any("trainer.accelerator=cpu" in c for c in lines)
    assert any(c.startswith("pixperfect preflight --config configs/paper.yaml") for c in lines)


def _absolute(args: list[str]) -> list[str]:
    """Config files named relative to the repository, as the docs name them."""
    return [str(ROOT / a) if a.endswith(".yaml") and (ROOT / a).is_file() else a for a in args]


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    config = args[args.index("--config") + 1] if "--config" in args else None
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return config, overrides


def _stage(cwd: Path, config: str | None, overrides: list[str], ranks: int) -> None:
    """Put what the launch names under ``cwd``: shards, LPIPS backbone file, codec weights."""
    from torchvision.models import alexnet

    from pixperfect.shards.build import BuildSpec, build
    from pixperfect.shards.sources import resolve_sources

    cfg = load_config(config, overrides)
    if cfg.data.source == "shards" and not (cwd / cfg.data.shards / "manifest.json").exists():
        need = ranks * max(1, cfg.data.num_workers)
        sources = resolve_sources("skimage", list(cfg.data.holdout))
        spec = BuildSpec(
            sources=sources,
            kind="clean",
            size=cfg.data.crop_size,
            crops_per_image=-(-need // len(sources)),
            shard_size=1,
        )
        build(spec, cwd / cfg.data.shards, progress=False)
    if cfg.loss.lpips_weights and cfg.loss.lpips > 0:
        # Random AlexNet features stand in for the backbone file: preflight checks the file
        # is there, it never reports a distance.
        weights = cwd / cfg.loss.lpips_weights
        weights.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}
        torch.save(state, weights / "alexnet-owt-7be5be79.pth")
    if cfg.data.val_images and not (cwd / cfg.data.val_images).exists():
        # Held-out photos as large as the validation crop (random pixels: preflight reads
        # the sizes only).
        from PIL import Image

        (cwd / cfg.data.val_images).mkdir(parents=True)
        side = cfg.data.val_crop_size
        for i in range(2):
            pixels = np.random.default_rng(i).integers(0, 256, (side, side + 16, 3), np.uint8)
            Image.fromarray(pixels).save(cwd / cfg.data.val_images / f"{i}.png")
    vae = cfg.sim.texture.vae
    if vae.kind != "none" and not (cwd / vae.path).exists():
        (cwd / vae.path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / vae.path).symlink_to(require(TAESD_DIR))


@pytest.mark.parametrize(
    "where, command, args, nodes, per_node",
    LAUNCHES,
    ids=[f"{w}:{c[:60]}" for w, c, *_ in LAUNCHES],
)
def test_every_documented_launch_passes_preflight_where_its_inputs_are_staged(
    where, command, args, nodes, per_node, tmp_path_factory, monkeypatch
):
    cwd = tmp_path_factory.getbasetemp() / "staged"  # one staging area for every command
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    config, overrides = _split(_absolute(args))
    _stage(cwd, config, overrides, nodes * per_node)
    report = preflight(config, overrides, nodes, per_node)
    assert report.passed, f"{where}: {command}\n{report.format()}"


def test_paper_preflight_with_nothing_staged_lists_each_missing_input_with_its_fix(
    tmp_path, monkeypatch, capsys
):
    from pixperfect.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached backbone either
    code = main(
        ["preflight", "--config", str(ROOT / "configs/paper.yaml"), "--nodes", "2",
         "--gpus-per-node", "8"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "refiner ffc: 38,759,043 parameters" in out  # 38-44M: the paper's ~41M
    assert "from step 10000: tone_l1 64, tone_lpips 5, adversarial 1, tone_adversarial 1" in out
    failures = [line for line in out.splitlines() if line.strip().startswith("FAIL")]
    assert len(failures) == 4, out
    assert any("LPIPS" in f and "alexnet-owt-7be5be79.pth" in f for f in failures)
    assert any("latent codec" in f and "taef2_encoder.pth" in f for f in failures)
    assert any("training shards missing" in f and "paper-clean-512" in f for f in failures)
    assert any("validation photos missing" in f and "photos/val" in f for f in failures)
    assert out.count("fix:") == 4
    assert "4 problem(s)" in out


def test_preflight_refuses_too_few_shards_a_bad_key_and_a_batch_that_does_not_fit(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    demo = str(ROOT / "configs/demo.yaml")
    from pixperfect.shards.build import BuildSpec, build

    # 2 shards: enough for 2 ranks x 1 worker, not for 4.
    spec = BuildSpec(
        ["skimage:astronaut", "skimage:rocket"], kind="clean", crops_per_image=1, shard_size=1
    )
    build(spec, tmp_path / "runs/demo/shards", progress=False)
    assert not preflight(demo, [], 2, 1).problems
    report = preflight(demo, [], 2, 2)
    assert [w for w, _ in report.problems if "not enough training shards" in w], report.format()
    bad = preflight(demo, ["trainer.max_stepz=3"], 1, 1)
    assert "trainer.max_stepz" in bad.problems[0][0]
    big = preflight(demo, ["trainer.accelerator=gpu", "data.batch_size=4096"], 1, 1, 16)
    fix = [f for w, f in big.problems if w.startswith("memory per GPU")]
    assert fix and "lower data.batch_size" in fix[0], big.format()


def test_ranks_use_the_gpus_slurm_binds_to_their_task(monkeypatch):
    assert bound_devices(4, 4) == [0, 1, 2, 3]  # --gpus-per-node: every task sees all
    assert bound_devices(4, 1) == [0, 0, 0, 0]  # --gpus-per-task=1: each sees its own
    assert bound_devices(4, 2) == [0, 1, 0, 1]  # bound in pairs (--gpu-bind=closest)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_NAME", "pixperfect-train")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    trainer = load_config(None, ["trainer.accelerator=gpu", "trainer.devices=8"]).trainer
    devices, strategy = device_plan(trainer)
    assert devices == 1
    assert strategy.parallel_devices == [torch.device("cuda", 0)] * 8
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert device_plan(trainer) == (8, "auto")


def test_preflight_reports_remote_shards_that_do_not_answer_instead_of_crashing(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/shards/manifest.json"
    report = preflight(str(ROOT / "configs/demo.yaml"), [f"data.shards={url}"], 1, 1)
    problems = [w for w, _ in report.problems if "training shards unreadable" in w]
    assert problems and url in problems[0], report.format()
