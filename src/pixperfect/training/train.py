"""``pixperfect train``: a run directory named from the config, a Lightning Trainer, resume.

runs/<run.name>/
  config.yaml            the resolved config of the latest launch
  checkpoints/last.ckpt  the checkpoint at the end of the latest launch
  checkpoints/step=N.ckpt  every trainer.ckpt_every_n_steps
  hpc_ckpt_N.ckpt        preemption checkpoints (SIGUSR1; Lightning's name and place)
  tb/                    TensorBoard logs (training/tensorboard.py: what is in them)

Before anything is written, a launch refuses data it cannot use (:func:`check_data`): too
few shards for its ranks x workers, or shards whose recipe contradicts the config (crop
size, format, simulator version, artifact recipe: :mod:`pixperfect.shards.match`), naming
both values and the fix. Every checkpoint records where the data came from and its recipe
hash (``data_provenance``: :class:`DataProvenance`).

A launch resumes from the newest of these checkpoints that loads (:func:`resume_checkpoint`),
so a rerun, a requeued SLURM job or a crashed one continues the step count. Every checkpoint
is written atomically (temp file, fsync, rename: training/checkpoints.py), so a kill during a
save leaves the previous one intact; a damaged one (from elsewhere) is skipped with a warning.

A rank that dies ends the job instead of hanging it: its peers' next collective fails at once
(gloo: the connection is reset) or, for a rank that hangs or is stopped, after
``trainer.ddp_timeout_s`` (:func:`ddp_strategy`); the rank that fails exits non-zero, and
Lightning (DDP children without SLURM) or srun (``--kill-on-bad-exit``) ends the others.

Preemption (:class:`Preemption`): on SIGUSR1 (SLURM: ``#SBATCH --signal=USR1@120`` before the
time limit; slurm/train.sbatch) all ranks save ``hpc_ckpt_N.ckpt`` together at the end of the
current step and the fit stops; at the end of training (logs flushed) rank 0 requeues the
SLURM job (``scontrol requeue``); the requeued job resumes from that checkpoint.
Lightning's own handler (``SLURMEnvironment(auto_requeue=True)``) is off: it saves inside
the signal handler, and under DDP that save is a collective, so a rank interrupted mid-step
waits at the barrier while another waits in the gradient all-reduce, for ever (seen on the
local cluster).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from data_sim.simulator import describe
from pixperfect.config import to_yaml
from pixperfect.sheets import contact_sheet, simulate_sheet
from pixperfect.training.checkpoints import (
    DATA_PROVENANCE_KEY,
    LAUNCH_ENV,
    AtomicCheckpointIO,
    checkpoint_problem,
    local_rank,
    node_launch_key,
    publish_answer,
    remove_answer,
    remove_partial_saves,
    shared_answer,
)
from pixperfect.training.datamodule import build_datamodule
from pixperfect.training.module import RefinerModule
from pixperfect.training.tensorboard import TensorBoardSummary

log = logging.getLogger(__name__)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.root) / cfg.run.name


class SaveLastOnTrainEnd(Callback):
    """``last.ckpt`` at the end of every fit, whatever the checkpoint cadence: the next launch
    of the same command resumes exactly where this one stopped.

    Runs on every rank: under DDP ``save_checkpoint`` is a collective (rank 0 writes, then all
    meet at a barrier), so it must not be guarded by rank."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class ContactSheet(Callback):
    """Writes a contact sheet of simulated training samples into the run directory once, so
    every run shows what its recipe looks like."""

    def __init__(self, path: Path, n: int = 8) -> None:
        self.path, self.n = path, n

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.path.exists():
            return
        cfg = pl_module.cfg
        if cfg.data.source == "shards":
            from pixperfect.shards.reader import preview

            batch, captions = preview(cfg.data.shards, self.n)
            if "composite" not in batch:  # clean shards: artifacts are made while training
                batch, params = pl_module.simulator(batch["target"], cfg.run.seed)
                captions = [f"{c}: {describe(params, i)}" for i, c in enumerate(captions)]
            contact_sheet(batch, captions, self.path)
        else:
            images = getattr(trainer.datamodule, "train_images", None)
            if not images:
                return
            size = max(cfg.data.crop_size, 128)
            simulate_sheet(pl_module.simulator, list(images.values()), self.path, self.n, size)
        log.info("contact sheet of the training data: %s", self.path)


def _warn_on_config_change(saved: Path, cfg: DictConfig) -> None:
    if not saved.exists():
        return
    old, new = OmegaConf.load(saved), OmegaConf.create(to_yaml(cfg))  # same types both sides
    changed = [
        key
        for section in new
        for key in OmegaConf.to_container(new[section])
        if OmegaConf.select(old, f"{section}.{key}") != OmegaConf.select(new, f"{section}.{key}")
    ]
    if changed:
        log.warning(
            "resuming %s with changed config keys: %s",
            saved.parent,
            ", ".join(f"{k}" for k in changed),
        )


def resume_checkpoint(
    directory: Path, env: dict[str, str] | None = None, timeout_s: float = 1800
) -> Path | None:
    """:func:`newest_loadable` in ``directory``, checked once per node: local rank 0 checks
    and leaves its answer for the node's other ranks, which wait for it (up to
    ``timeout_s``; then they check for themselves) instead of CRC-reading every checkpoint
    again (training/checkpoints.py: ``node_launch_key``). Where the launcher names no launch
    (``env``: default ``os.environ``), every rank checks."""
    env = dict(os.environ) if env is None else env
    key = node_launch_key(env)
    if key is None:
        return newest_loadable(directory)
    if local_rank(env) == 0:
        answer = newest_loadable(directory)
        publish_answer(directory, key, answer)
        return answer
    found, answer = shared_answer(directory, key, timeout_s)
    if found:
        log.info("resume check of local rank 0 taken (%s)", answer or "new run")
        return answer
    return newest_loadable(directory)


def newest_loadable(directory: Path) -> Path | None:
    """The checkpoint a launch of the run in ``directory`` resumes from: the newest (by
    modification time) of Lightning's preemption checkpoints ``hpc_ckpt_N.ckpt``,
    ``checkpoints/last.ckpt`` and the periodic ``checkpoints/step=N.ckpt`` that loads
    (:func:`~pixperfect.training.checkpoints.checkpoint_problem`); None for a new run.

    A checkpoint that does not load is skipped with a warning naming it and why, and the next
    newest is tried; when none loads the run starts from step 0, with a warning. Temp files
    of saves in progress or killed (``.<name>.<pid>.tmp``) match none of the names.

    Every rank calls this before ``fit`` and must get the same answer: no rank writes a
    checkpoint before all ranks have joined the process group inside ``fit``, so they all see
    the same files (on a shared file system), and the choice is deterministic (ties: the
    preemption checkpoint, then last.ckpt, then the file name). :class:`ResumeAgreement`
    checks it once the ranks have met."""
    checkpoints = directory / "checkpoints"
    candidates = [
        *((0, p) for p in checkpoints.glob("step=*.ckpt")),
        *((1, p) for p in [checkpoints / "last.ckpt"] if p.is_file()),
        *((2, p) for p in directory.glob("hpc_ckpt_*.ckpt")),
    ]

    def key(item: tuple[int, Path]) -> tuple[int, int, str]:
        kind, path = item
        return path.stat().st_mtime_ns, kind, path.name

    skipped = []
    for _, path in sorted(candidates, key=key, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s", path, problem)
        skipped.append(path.name)
    if skipped:
        log.warning(
            "no loadable checkpoint in %s (skipped %s): starting from step 0",
            directory,
            ", ".join(skipped),
        )
    return None


class ResumeAgreement(Callback):
    """Once the ranks have met (``setup``, inside ``fit``, before the checkpoint is restored):
    fail on every rank, together, if they did not all pick the same checkpoint to resume
    from (:func:`resume_checkpoint` ran on each rank alone; they could differ only where
    the ranks do not see the same files). Every rank has then read its node's resume answer
    (:func:`resume_checkpoint`), which local rank 0 removes."""

    def __init__(self, resume: Path | None, directory: Path | None = None) -> None:
        self.resume, self.directory = str(resume), directory

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.directory is not None:
            remove_answer(self.directory, dict(os.environ))
        if trainer.world_size < 2:
            return
        chosen = trainer.strategy.broadcast(self.resume, src=0)
        if not trainer.strategy.reduce_boolean_decision(chosen == self.resume, all=True):
            raise RuntimeError(
                f"rank {trainer.global_rank} would resume from {self.resume}, rank 0 from "
                f"{chosen} (or another rank differs): the ranks must see the same run folder"
            )


class DataProvenance(Callback):
    """Every checkpoint records the data the run read (``checkpoint["data_provenance"]``:
    location, remote or local, kind, recipe hash...; :func:`pixperfect.shards.match.
    data_provenance`), which ``pixperfect export`` copies into the export."""

    def __init__(self, provenance: dict) -> None:
        self.provenance = provenance

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[DATA_PROVENANCE_KEY] = self.provenance


def cluster_plugins() -> list:
    """Under ``srun`` (SLURM, not an interactive ``bash``/``interactive`` job): Lightning's
    SLURMEnvironment, as Lightning would detect it, but with its own requeue handler off
    (:class:`Preemption` does that part)."""
    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


def bound_devices(tasks_per_node: int, visible: int) -> list[int]:
    """The CUDA index each local rank uses when SLURM binds GPUs to tasks.

    With ``--gpus-per-node=G`` every task sees the node's G GPUs and local rank i uses GPU i.
    With ``--gpus-per-task=1`` (or ``--gpu-bind``) every task sees only its own GPU(s), which
    it calls ``cuda:0``...; local rank i then uses ``i % visible``: with one GPU per task
    that is cuda:0 in every task, with tasks bound in groups it is each group's own."""
    return [i % visible for i in range(tasks_per_node)]


def node_gpus(env: dict[str, str]) -> int | None:
    """The GPUs SLURM gave this node (``SLURM_GPUS_ON_NODE``, else ``SLURM_GPUS_PER_NODE``,
    which may read ``8``, ``gpu:8`` or ``a100:8``); None when neither says."""
    for name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        m = re.fullmatch(r"(?:[\w-]+:)*(\d+)(?:\(.*\))?", env.get(name, "").strip())
        if m:
            return int(m.group(1))
    return None


def binding_warning(visible: int, env: dict[str, str]) -> str | None:
    """Why a task that sees ``visible`` GPU(s) of its node is badly bound, or None. With
    ``--gpus-per-task``/``--gpu-bind`` each task sees only its own GPU(s): NCCL then cannot
    use peer-to-peer (NVLink) between the GPUs of a node and falls back to slower paths.
    ``--gpus-per-node`` is the one documented binding (docs/cluster.md)."""
    on_node = node_gpus(env)
    if on_node is None or on_node <= 1 or visible >= on_node:
        return None
    return (
        f"this task sees {visible} of its node's {on_node} GPUs (--gpus-per-task or "
        "--gpu-bind): NCCL loses peer-to-peer between the node's GPUs; submit with "
        f"--gpus-per-node={on_node} so every task sees all of them (docs/cluster.md)"
    )


def device_plan(t: DictConfig) -> tuple[object, object]:
    """``(devices, strategy)`` for the Trainer. Lightning maps local rank i to GPU i of the
    GPUs its process sees (Lightning issue #16828), which fails when SLURM binds GPUs to
    tasks; then the DDP strategy gets the devices of :func:`bound_devices` instead, with a
    warning (:func:`binding_warning`)."""
    import torch

    tasks = t.devices if isinstance(t.devices, int) else 0
    gpu = str(t.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if not (SLURMEnvironment.detect() and gpu):
        return t.devices, t.strategy
    visible = torch.cuda.device_count()
    if (warning := binding_warning(visible, dict(os.environ))) is not None:
        log.warning(warning)
    if tasks <= 1:
        return t.devices, t.strategy
    if visible >= tasks:
        return t.devices, t.strategy
    if str(t.strategy) not in ("auto", "ddp"):
        raise ValueError(
            f"each SLURM task sees {visible} GPU(s) for {tasks} tasks per node: "
            f"trainer.strategy={t.strategy} cannot be bound per task; use ddp"
        )
    devices = [torch.device("cuda", i) for i in bound_devices(tasks, visible)]
    log.info("GPUs bound to tasks (%d visible per task): local ranks use %s", visible, devices)
    return 1, build_ddp(t, parallel_devices=devices)


def ddp_options(t: DictConfig, accelerator: str) -> dict:
    """DistributedDataParallel's options for the run: gradients in the buckets themselves
    (``gradient_as_bucket_view``: no second copy of 160 MB of fp32 gradients), no buffer
    broadcast before every forward (the generator has none that differ across ranks; the
    discriminator is outside DDP), and with ``trainer.ddp_bf16_compress`` torch's
    ``bf16_compress_hook`` (the all-reduce in bfloat16: half the bytes across nodes)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    options: dict = {"gradient_as_bucket_view": True}
    # torch 2.10+ renames the forward broadcast (broadcast_buffers is deprecated there).
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    if t.ddp_bf16_compress:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        options["ddp_comm_hook"] = default_hooks.bf16_compress_hook
        log.info("DDP gradients all-reduced in bfloat16 (trainer.ddp_bf16_compress, %s)",
                 accelerator)  # fmt: skip
    return options


class RunDDPStrategy(DDPStrategy):
    """Lightning's DDPStrategy, with the communication hook registered on every device type:
    Lightning registers one on CUDA only and drops it silently elsewhere. gloo all-reduces
    bfloat16 as well (tests/test_ddp_gradients.py: the gradients agree), so CPU ranks run the
    hook the GPUs run."""

    def _register_ddp_hooks(self) -> None:
        hook = getattr(self, "_ddp_comm_hook", None)
        if self.root_device.type == "cuda" or hook is None:
            return super()._register_ddp_hooks()
        self.model.register_comm_hook(getattr(self, "_ddp_comm_state", None), hook)
        log.info("DDP comm hook %s registered on %s", hook.__name__, self.root_device)


def build_ddp(t: DictConfig, **kwargs) -> DDPStrategy:
    """The run's DDP strategy: ``trainer.ddp_timeout_s`` as its collective timeout and
    :func:`ddp_options`."""
    return RunDDPStrategy(
        timeout=timedelta(seconds=t.ddp_timeout_s),
        **ddp_options(t, str(t.accelerator)),
        **kwargs,
    )


def ddp_strategy(t: DictConfig, devices: object, strategy: object) -> object:
    """``strategy``, or a DDPStrategy with ``trainer.ddp_timeout_s`` as its collective timeout
    where the run is DDP: strategy ``ddp``, or ``auto`` with more than one process (devices
    x nodes; Lightning resolves that to ddp), with :func:`ddp_options`. ``device_plan``'s
    DDPStrategy (GPU binding) has them already; other strategies are left to Lightning (its
    default timeout: 30 min)."""
    if isinstance(strategy, DDPStrategy):
        return strategy  # device_plan's, built by build_ddp
    many = t.num_nodes > 1 or (isinstance(devices, int) and devices > 1)
    if str(strategy) == "ddp" or (
        str(strategy) == "auto" and many and str(t.accelerator) in ("auto", "cpu", "gpu", "cuda")
    ):
        return build_ddp(t)
    return strategy


def next_hpc_path(directory: Path) -> Path:
    """``hpc_ckpt_<N+1>.ckpt`` after the highest N in ``directory`` (Lightning's naming)."""
    versions = [
        int(m.group(1))
        for p in directory.glob("hpc_ckpt_*.ckpt")
        if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))
    ]
    return directory / f"hpc_ckpt_{max(versions, default=0) + 1}.ckpt"


REQUEUE_WAIT_S = 120  # how long ranks wait for SLURM to stop them after a requeue


class Preemption(Callback):
    """SIGUSR1 means "save and get out": at the end of the step in progress every rank saves
    ``hpc_ckpt_N.ckpt`` in the run directory (a collective; rank 0 writes) and the fit stops;
    at the end of training, with the loggers flushed, rank 0 requeues the SLURM job if there
    is one. Requeueing kills the job's processes at once, so it must come
    after everything this start has to write, not inside the step.

    The signal handler only sets a flag. The ranks agree on it with an all-reduce ("any")
    at the end of every ``poll_every``-th step (``trainer.preempt_poll_every``; the
    all-reduce makes the host wait for the device, so not every step), a point all ranks
    reach at the same global step, so one signalled rank is enough, every rank stops at the
    same step, and no collective ever runs inside a signal handler. In one process there is
    nothing to agree on: the flag is looked at every step."""

    def __init__(self, directory: Path, signum: int = signal.SIGUSR1, poll_every: int = 1) -> None:
        self.directory, self.signum, self.poll_every = directory, signum, poll_every
        self.requested = False
        self.preempted_at: int | None = None  # the step this start saved at when preempted
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True  # nothing else here: see the class docstring

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def polls(self, trainer: L.Trainer) -> bool:
        """Whether the ranks agree on the flag at the end of this step: every
        ``poll_every``-th global step (the same on every rank), every step in one process."""
        return trainer.world_size == 1 or trainer.global_step % self.poll_every == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.polls(trainer):
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        # Only rank 0 writes, so only its path counts (another rank may see its file already).
        path = next_hpc_path(self.directory)
        log.info("rank %d: preempted at step %d", trainer.global_rank, trainer.global_step)
        trainer.save_checkpoint(path)  # every rank: a collective under DDP
        if trainer.is_global_zero:
            log.info("preemption checkpoint: %s", path)
        self.preempted_at = trainer.global_step
        trainer.should_stop = True
        self.requested = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the loop (the last step's scalars are logged) and after SaveLastOnTrainEnd.
        if self.preempted_at is None:
            return
        for logger in trainer.loggers:
            logger.save()
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "flush"):
                experiment.flush()
        job = os.environ.get("SLURM_JOB_ID")
        if not (job and SLURMEnvironment.detect()):
            return
        # Every rank stays alive until SLURM ends the job: a rank that exits first makes
        # the step fail, and the job can then end FAILED instead of REQUEUED.
        trainer.strategy.barrier("preemption")
        requeued = self._requeue(job) if trainer.is_global_zero else False
        if trainer.strategy.broadcast(requeued, src=0):
            time.sleep(REQUEUE_WAIT_S)
            log.warning("rank %d: still running %d s after the requeue", trainer.global_rank,
                        REQUEUE_WAIT_S)  # fmt: skip

    def _requeue(self, job: str) -> bool:
        """Rank 0: put the SLURM job back in the queue (``--requeue`` allows it)."""
        if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        # Said before: SLURM may kill this process before scontrol's answer is read.
        log.info("requeueing SLURM job %s at step %d", job, self.preempted_at)
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
            return False
        log.info("requeued SLURM job %s at step %d", job, self.preempted_at)
        return True


def build_trainer(
    cfg: DictConfig,
    directory: Path,
    resume: Path | None = None,
    data_provenance: dict | None = None,
) -> L.Trainer:
    """The Trainer of a launch; ``resume`` is the checkpoint it will resume from (checked to
    be the same on every rank: :class:`ResumeAgreement`); ``data_provenance`` goes into
    every checkpoint (:class:`DataProvenance`)."""
    t = cfg.trainer
    checkpoints = directory / "checkpoints"
    devices, strategy = device_plan(t)
    return L.Trainer(
        default_root_dir=directory,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=ddp_strategy(t, devices, strategy),
        precision=t.precision,
        plugins=[*cluster_plugins(), AtomicCheckpointIO()],
        # No hp_metric = -1: TensorBoardSummary declares the validation scores as the
        # hparams tab's metrics (learning rates: the module logs lr/generator, lr/discriminator).
        logger=TensorBoardLogger(str(directory), name="tb", version="", default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="{step}",
                every_n_train_steps=t.ckpt_every_n_steps,
                save_top_k=-1,
            ),
            SaveLastOnTrainEnd(checkpoints / "last.ckpt"),
            Preemption(directory, poll_every=t.preempt_poll_every),
            ContactSheet(directory / "contact_sheet.png"),
            TensorBoardSummary(),
            ResumeAgreement(resume, directory),
            *([DataProvenance(data_provenance)] if data_provenance is not None else []),
        ],
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
    )


def check_data(cfg: DictConfig) -> dict:
    """Refuse, before anything is written or trained, data the run cannot use: too few
    shards for its ranks x workers, shards whose recipe contradicts the config
    (:mod:`pixperfect.shards.match`: crop size, format, simulator version, artifact recipe;
    training and validation shards); returns the run's data provenance."""
    from pixperfect.shards.match import check_run_data

    manifest = None
    t, d = cfg.trainer, cfg.data
    ranks = (t.devices if isinstance(t.devices, int) and t.devices > 0 else 1) * t.num_nodes
    if d.source == "shards":
        # A worker without a shard of its own would starve its rank.
        from pixperfect.shards.reader import check_enough_shards

        manifest = check_enough_shards(d.shards, d.num_workers, ranks, d.batch_size, d.resample)
    if d.source == "corpus" and not d.resample:  # each slot reads input shards of its own
        from pixperfect.corpus import corpus_shards

        slots, shards = ranks * max(1, d.num_workers), len(corpus_shards(d.corpus))
        if shards < slots:
            raise ValueError(
                f"data.corpus={d.corpus} has {shards} input shard(s) but {ranks} rank(s) x "
                f"{max(1, d.num_workers)} worker(s) need at least {slots} with "
                "data.resample=false: lower data.num_workers or set data.resample=true"
            )
    return check_run_data(cfg, manifest)


def train(cfg: DictConfig) -> Path:
    """Train (or resume) the run the config names; returns the run directory."""
    provenance = check_data(cfg)  # before the run directory exists: nothing to clean up
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)

    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    if _starts_local_ranks(cfg):  # the ranks Lightning starts inherit the launch's name
        os.environ[LAUNCH_ENV] = uuid.uuid4().hex
    resume = resume_checkpoint(directory, timeout_s=cfg.trainer.ddp_timeout_s)
    # knows its rank (SLURM, DDP children)
    trainer = build_trainer(cfg, directory, resume, data_provenance=provenance)
    if trainer.is_global_zero:  # one writer; the other ranks never read config.yaml
        _warn_on_config_change(directory / "config.yaml", cfg)
        (directory / "config.yaml").write_text(to_yaml(cfg))
        remove_partial_saves(directory, directory / "checkpoints")
    if resume:
        log.info("rank %d resuming from %s", trainer.global_rank, resume)
    try:
        trainer.fit(module, datamodule=build_datamodule(cfg), ckpt_path=resume)
    except BaseException:
        end_local_ranks(trainer)
        raise
    return directory


def _starts_local_ranks(cfg: DictConfig) -> bool:
    """Whether this process is the one that starts the node's other ranks (Lightning's DDP
    launcher: more than one device, outside srun and torchrun)."""
    env = os.environ
    launched = env.get("SLURM_STEP_ID") is not None or "TORCHELASTIC_RUN_ID" in env
    devices = cfg.trainer.devices
    return not launched and "LOCAL_RANK" not in env and isinstance(devices, int) and devices > 1


def end_local_ranks(trainer: L.Trainer) -> None:
    """After a failed fit in the process that started the other ranks (DDP without SLURM):
    SIGKILL those still running. Lightning leaves them on an exception (it kills them only on
    Ctrl-C), and a rank that is stopped or hung would outlive the command; under SLURM srun
    ends the tasks (``--kill-on-bad-exit``)."""
    for proc in getattr(trainer.strategy.launcher, "procs", None) or []:
        if proc.poll() is None:
            log.warning("killing rank process %d: this launch failed", proc.pid)
            proc.kill()
            proc.wait()
