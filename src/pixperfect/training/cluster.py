"""Where the ranks run and how they talk: the SLURM environment, GPUs bound to SLURM tasks
(:func:`device_plan`), the DDP strategy and its options (:func:`ddp_strategy`), and the rank
processes a launch starts itself.

A rank that dies ends the job instead of hanging it: its peers' next collective fails at once
(gloo: the connection is reset) or, for a rank that hangs or is stopped, after
``trainer.ddp_timeout_s`` (:func:`ddp_strategy`); the rank that fails exits non-zero, and
Lightning (DDP children without SLURM; :func:`end_local_ranks` after a failed fit) or srun
(``--kill-on-bad-exit``) ends the others.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta

import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig

from pixperfect.errors import ConfigError

log = logging.getLogger(__name__)


def cluster_plugins() -> list:
    """Under ``srun`` (SLURM, not an interactive ``bash``/``interactive`` job): Lightning's
    SLURMEnvironment, as Lightning would detect it, but with its own requeue handler off
    (:class:`~pixperfect.training.preemption.Preemption` does that part)."""
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
        raise ConfigError(
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


def starts_local_ranks(cfg: DictConfig) -> bool:
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
