"""``pixperfect preflight``: everything a training launch needs, checked before it holds an
allocation. Every problem is listed with what to do about it; nothing is launched or written.

Checks, in order: the config (valid, models build: their parameter counts), the LPIPS and
latent-codec weights, the training data (shards exist, are enough for ranks x workers,
and their recipe matches the config: :mod:`pixperfect.shards.match`, what ``pixperfect
train`` refuses too), the run directory (writable), the disk (room for every checkpoint the run
keeps) and the per-GPU memory (:mod:`pixperfect.training.cost`: saved-for-backward bytes on
a small probe, scaled to the crop and batch, plus weights, gradients, Adam and EMA).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from pixperfect.config import ConfigError, load_config
from pixperfect.config_schema import TONE_PREFIX, loss_weights

if TYPE_CHECKING:
    from pixperfect.shards.match import Match

GIB = 2**30
DEFAULT_GPU_MEMORY_GIB = 80.0  # A100/H100 80 GB, when no GPU is visible to measure


@dataclass
class Report:
    """Lines of ``(status, what, fix)``: ``ok``, ``warn`` (works, but slowly or wastefully)
    or ``FAIL`` (a problem: the launch must not go ahead)."""

    header: str
    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def ok(self, what: str) -> None:
        self.lines.append(("ok", what, ""))

    def warn(self, what: str, fix: str) -> None:
        self.lines.append(("warn", what, fix))

    def problem(self, what: str, fix: str) -> None:
        self.lines.append(("FAIL", what, fix))

    @property
    def problems(self) -> list[tuple[str, str]]:
        return [(what, fix) for status, what, fix in self.lines if status == "FAIL"]

    @property
    def passed(self) -> bool:
        return not self.problems

    def format(self) -> str:
        out = [self.header]
        for status, what, fix in self.lines:
            out.append(f"  {status:<4}  {what}")
            if fix:
                out.append(f"        fix: {fix}")
        n = len(self.problems)
        out.append(
            "preflight: passed" if not n else f"preflight: {n} problem(s); fix them and run again"
        )
        return "\n".join(out)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _check_models(cfg: DictConfig, report: Report) -> None:
    from pixperfect.training.cost import build_networks, count_parameters

    try:
        generator, discriminator = build_networks(cfg)
    except (ValueError, RuntimeError) as e:
        report.problem(f"models do not build: {e}", "fix the model/gan keys named above")
        return
    text = f"refiner {cfg.model.name}: {count_parameters(generator):,} parameters"
    if discriminator is not None:
        text += f"; discriminator {cfg.gan.discriminator}: {count_parameters(discriminator):,}"
    report.ok(text)


def _describe_terms(cfg: DictConfig, report: Report) -> None:
    """Which loss terms train, from which step: a warm-up or a zero weight is said here."""
    starts: dict[int, list[str]] = {}
    weights = loss_weights(cfg.loss)
    for name in [n for n in weights if not n.startswith(TONE_PREFIX)]:
        for term in (name, TONE_PREFIX + name):
            if weights.get(term, 0) <= 0:
                continue
            start = cfg.loss.tone.warmup_steps if term.startswith(TONE_PREFIX) else 0
            if term.endswith("adversarial"):
                start = max(start, cfg.gan.warmup_steps)
            starts.setdefault(start, []).append(f"{term} {cfg.loss[term]:g}")
    text = "; ".join(f"from step {k}: {', '.join(v)}" for k, v in sorted(starts.items()))
    vae = cfg.sim.texture.vae
    codec = "off" if str(vae.kind).lower() == "none" else f"{vae.kind} {vae.variant}"
    report.ok(f"loss terms {text}; EMA {cfg.optim.ema_decay:g}; VAE round trip {codec}")


def _check_lpips(cfg: DictConfig, report: Report) -> None:
    from pixperfect.losses.lpips import lpips_files

    if not (cfg.loss.lpips > 0 or cfg.loss.tone_lpips > 0):
        return
    files = lpips_files(cfg.loss.lpips_net, cfg.loss.lpips_weights)
    missing = files.missing_message()
    if missing is None:
        report.ok(f"LPIPS-{cfg.loss.lpips_net} weights: {files.backbone}, {files.linear}")
    elif cfg.loss.lpips_missing == "skip":
        report.ok("LPIPS weights missing, loss.lpips_missing=skip: training WITHOUT LPIPS")
    else:
        report.problem(
            f"LPIPS-{cfg.loss.lpips_net} weights missing: {missing}",
            f"stage the file(s) in loss.lpips_weights={cfg.loss.lpips_weights} "
            "(or set loss.lpips_missing=skip to train without LPIPS)",
        )


def _check_codec(cfg: DictConfig, report: Report) -> None:
    from data_sim.texture import VAEConfig, load_codec

    vae = cfg.sim.texture.vae
    if str(vae.kind).lower() == "none" or cfg.sim.texture.p == 0 or vae.p == 0:
        return
    try:
        load_codec(VAEConfig(**vae))
    except (OSError, ValueError, RuntimeError) as e:
        report.problem(
            f"latent codec ({vae.kind} {vae.variant}) does not load from {vae.path}: {e}",
            'stage the codec weights (docs/simulation.md, "The latent codec") and set '
            "sim.texture.vae.path",
        )
        return
    report.ok(f"latent codec: {vae.kind} {vae.variant} from {vae.path}")


def _check_data(cfg: DictConfig, ranks: int, report: Report) -> None:
    d = cfg.data
    if d.source == "folder" and not Path(d.images).is_dir():
        report.problem(f"data.images={d.images} is not a folder", "point it at the photos")
    if d.source == "shards":
        _check_training_shards(cfg, ranks, report)
    if d.val_shards:
        _check_validation_shards(cfg, report)
    elif d.val_images:
        _check_validation_photos(cfg, report)


def _check_training_shards(cfg: DictConfig, ranks: int, report: Report) -> None:
    from pixperfect.shards.match import compare
    from pixperfect.shards.reader import check_enough_shards

    d = cfg.data
    try:
        manifest = check_enough_shards(d.shards, d.num_workers, ranks, d.batch_size, d.resample)
    except FileNotFoundError as e:
        report.problem(f"training shards missing: {e}", _build_hint(cfg))
        return
    except ValueError as e:
        report.problem(f"not enough training shards: {e}", _build_hint(cfg))
        return
    except OSError as e:  # a remote location that does not answer
        report.problem(f"training shards unreadable: {e}", "check that data.shards is reachable")
        return
    if not _report_match(compare(manifest, cfg, "training"), report):
        return
    recipe = manifest.get("recipe_hash")
    report.ok(
        f"training shards: {d.shards}: {manifest['kind']}, {manifest['num_shards']} shards, "
        f"{manifest['num_samples'] or 'an unknown number of'} samples of {manifest['size']} "
        f"px, enough for {ranks} rank(s) x {max(1, d.num_workers)} worker(s); "
        + (f"recipe {recipe[:12]} matches the config" if recipe else "no recipe recorded")
    )


def _check_validation_photos(cfg: DictConfig, report: Report) -> None:
    """data.val_images: a folder of held-out photos, each at least data.val_crop_size on
    its shorter side (a smaller one is left out of validation, never upscaled)."""
    from PIL import Image

    from pixperfect.data.photos import list_images

    d = cfg.data
    fix = (
        f"stage held-out photos of at least {d.val_crop_size} px, none of them in the "
        "training data, in data.val_images (docs/cluster.md), or set data.val_shards"
    )
    try:
        files = list_images(d.val_images)
    except FileNotFoundError as e:
        report.problem(f"validation photos missing: {e}", fix)
        return
    small = []
    for path in files:
        try:
            with Image.open(path) as image:  # the header only
                if min(image.size) < d.val_crop_size:
                    small.append(path.name)
        except OSError:
            small.append(path.name)
    if len(small) == len(files):
        report.problem(f"no photo in {d.val_images} is {d.val_crop_size} px or larger", fix)
    elif small:
        report.warn(
            f"{len(small)} of {len(files)} validation photos left out: under "
            f"{d.val_crop_size} px or unreadable ({', '.join(small[:5])})",
            fix,
        )
    else:
        report.ok(
            f"validation photos: {len(files)} in {d.val_images}, each >= {d.val_crop_size} px"
        )


def _check_validation_shards(cfg: DictConfig, report: Report) -> None:
    from pixperfect.shards.match import compare
    from pixperfect.shards.reader import read_manifest

    d = cfg.data
    try:
        val = read_manifest(d.val_shards)
    except FileNotFoundError as e:
        report.problem(f"validation shards missing: {e}", "build them or unset data.val_shards")
        return
    except (OSError, ValueError) as e:
        report.problem(f"validation shards unreadable: {e}", "check data.val_shards")
        return
    if _report_match(compare(val, cfg, "validation"), report):
        report.ok(f"validation shards: {d.val_shards}: {val['size']} px, their own recipe")


def _report_match(match: Match, report: Report) -> bool:
    """The shards' contradictions of the config as problems, what could not be checked and
    allowed differences as warnings (:mod:`pixperfect.shards.match`, what ``pixperfect
    train`` refuses too); True when nothing contradicts."""
    for c in match.contradictions:
        report.problem(
            f"{match.role} shards {match.location}: {c.what}: shards {c.shards}, config {c.config}",
            c.fix,
        )
    key = "data.shards" if match.role == "training" else "data.val_shards"
    for line in match.unchecked:
        report.warn(
            f"{match.role} shards {match.location}: not checked: {line}",
            f"point {key} at the shards' manifest (e.g. https://host/path/manifest.json)",
        )
    for line in match.notes:
        report.warn(line, "build the validation shards with the training config if unintended")
    return match.ok


def _build_hint(cfg: DictConfig) -> str:
    d = cfg.data
    need = max(1, d.num_workers)
    return (
        f"pixperfect shards build --images PHOTOS --out {d.shards} --size {d.crop_size} "
        f"--kind clean|artifact --config CONFIG (at least ranks x {need} shards; "
        "slurm/precompute.sbatch builds them on GPU nodes)"
    )


def _check_run_dir(cfg: DictConfig, report: Report) -> Path | None:
    from pixperfect.training.run_folder import run_dir

    directory = run_dir(cfg)
    existing = _nearest_existing(directory)
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".preflight-"):
            pass
    except OSError as e:
        report.problem(
            f"run directory {directory} is not writable ({existing}: {e.strerror})",
            "set run.root to a writable shared folder",
        )
        return None
    report.ok(f"run directory: {directory} (writable)")
    return existing


def checkpoint_count(cfg: DictConfig) -> int:
    """Checkpoints a run keeps: every periodic one, last.ckpt and a preemption one."""
    t = cfg.trainer
    return t.max_steps // t.ckpt_every_n_steps + 2


def _check_memory_and_disk(
    cfg: DictConfig, existing: Path | None, gpu_memory_gib: float | None, report: Report
) -> None:
    from pixperfect.training.cost import measure_step_cost

    cost = measure_step_cost(cfg)
    ckpt_bytes = cost.checkpoint_bytes
    need = checkpoint_count(cfg) * ckpt_bytes
    if existing is not None:
        free = shutil.disk_usage(existing).free
        what = (
            f"disk: {checkpoint_count(cfg)} checkpoints x {ckpt_bytes / GIB:.2f} GiB = "
            f"{need / GIB:.1f} GiB, {free / GIB:.0f} GiB free at {existing}"
        )
        if free < need:
            report.problem(what, "free space, raise trainer.ckpt_every_n_steps or move run.root")
        else:
            report.ok(what)
    accelerator = str(cfg.trainer.accelerator)
    estimate = cost.memory_bytes(cfg.data.batch_size) / GIB
    basis = (
        f"{cost.activation_bytes_per_image / GIB:.2f} GiB saved for backward per "
        f"{cost.crop_size} px image, measured on a {cfg.trainer.precision} probe and scaled "
        "by pixels, + weights/grads/Adam/EMA, x1.25"
        + ("" if cost.lpips_counted else "; LPIPS not counted (weights missing)")
    )
    # "auto" trains on a GPU only where one is visible (a GPU launch names trainer.accelerator).
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        report.ok(f"memory per process: about {estimate:.1f} GiB ({basis})")
        return
    if gpu_memory_gib is None and torch.cuda.is_available():
        gpu_memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB
        source = f"{torch.cuda.get_device_name(0)} here"
    elif gpu_memory_gib is None:
        gpu_memory_gib, source = DEFAULT_GPU_MEMORY_GIB, "assumed: no GPU here, --gpu-memory-gib"
    else:
        source = "--gpu-memory-gib"
    what = (
        f"memory per GPU: about {estimate:.1f} GiB at data.batch_size={cfg.data.batch_size} "
        f"of {gpu_memory_gib:.0f} GiB ({source}); {basis}"
    )
    if estimate > gpu_memory_gib:
        per_image = cost.memory_bytes(1) / GIB - cost.memory_bytes(0) / GIB
        fits = int((gpu_memory_gib - cost.memory_bytes(0) / GIB) // per_image)
        report.problem(what, f"lower data.batch_size to {max(fits, 0)} or data.crop_size")
    else:
        report.ok(what)


def _check_cpus(cfg: DictConfig, report: Report) -> None:
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cfg.data.num_workers + 1 > int(cpus):
        # It runs, slowly: the loader workers and the step share the task's CPUs.
        report.warn(
            f"data.num_workers={cfg.data.num_workers} loader workers + the training process "
            f"on {cpus} CPU(s) per task (SLURM_CPUS_PER_TASK)",
            f"submit with --cpus-per-task={cfg.data.num_workers + 1} or more",
        )


def preflight(
    config: str | None,
    overrides: list[str],
    nodes: int,
    gpus_per_node: int,
    gpu_memory_gib: float | None = None,
) -> Report:
    """Check a launch of ``config`` + ``overrides`` on ``nodes`` x ``gpus_per_node`` ranks."""
    ranks = nodes * gpus_per_node
    report = Report(
        f"preflight: {config or 'defaults'} on {nodes} node(s) x {gpus_per_node} rank(s) per "
        f"node = {ranks} rank(s)"
    )
    if nodes < 1 or gpus_per_node < 1:
        report.problem(f"--nodes {nodes} --gpus-per-node {gpus_per_node}", "both must be >= 1")
        return report
    try:
        cfg = load_config(
            config, [*overrides, f"trainer.num_nodes={nodes}", f"trainer.devices={gpus_per_node}"]
        )
    except ConfigError as e:
        report.problem(f"config: {e}", "fix the key named above")
        return report
    report.ok(f"config: valid (run {cfg.run.root}/{cfg.run.name}, {cfg.trainer.max_steps} steps)")
    _check_models(cfg, report)
    _describe_terms(cfg, report)
    _check_lpips(cfg, report)
    _check_codec(cfg, report)
    _check_data(cfg, ranks, report)
    existing = _check_run_dir(cfg, report)
    _check_cpus(cfg, report)
    _check_memory_and_disk(cfg, existing, gpu_memory_gib, report)
    return report
