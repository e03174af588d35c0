"""What one training step costs, measured on a small probe and scaled to the configured crop.

The probe runs the configured step's networks and loss terms (every term on, as after the
warm-ups) on batches of 1 and 2 random images of ``probe_size`` px on the CPU, in the run's
precision (bf16 autocast for ``bf16-mixed``); what the second image adds is one image's cost:

- FLOPs: torch's FLOP counter over the generator step (forward and backward of G with every
  loss term) and the discriminator step (both spaces). Convolutions and matrix products are
  counted; the FFTs of the FFC refiner, elementwise work and the lazy R1 penalty (a double
  backward through D once every ``gan.r1_every`` steps, which the counter refuses) are
  not, so this is a lower bound.
- Memory: the bytes autograd saves for the generator's backward (counted with
  ``saved_tensors_hooks``, each storage once, parameters excluded), which is the step's
  peak; plus weights, gradients, Adam's two moments and the EMA in float32. Activations
  scale with pixels, so both are scaled by ``(crop / probe)**2`` and the batch.

Used by ``pixperfect preflight`` (per-GPU memory) and for docs/training.md's cost estimate.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from pixperfect.losses.lpips import lpips_files
from pixperfect.models import build_discriminator, build_refiner
from pixperfect.training.objective import Objective

# Allocator fragmentation, cuDNN/cuBLAS workspaces and the simulation's temporaries: the
# measured activations and states are multiplied by this.
MEMORY_OVERHEAD = 1.25


@dataclass
class StepCost:
    generator_params: int
    discriminator_params: int
    crop_size: int
    flops_per_image: float  # one training step, per image, at crop_size
    activation_bytes_per_image: float  # saved for the generator's backward, at crop_size
    state_bytes: int  # weights, gradients, Adam moments, EMA (float32), bf16 weight copies
    checkpoint_bytes: int  # what a checkpoint holds: weights, EMA, Adam moments
    lpips_counted: bool  # False when the LPIPS weights were missing (terms left out)

    def memory_bytes(self, batch_size: int) -> float:
        """Estimated peak memory of one rank at ``batch_size`` images per step."""
        return MEMORY_OVERHEAD * (self.state_bytes + batch_size * self.activation_bytes_per_image)

    def images_per_second(self, sustained_flops: float) -> float:
        """Images/s per device if it sustains ``sustained_flops`` FLOP/s on this step."""
        return sustained_flops / self.flops_per_image


def build_networks(cfg: DictConfig) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The refiner and (when an adversarial term has weight) the discriminator of ``cfg``."""
    model = dict(cfg.model)
    generator = build_refiner(model.pop("name"), **model)
    adversarial = cfg.loss.adversarial > 0 or cfg.loss.tone_adversarial > 0
    g = cfg.gan
    discriminator = (
        build_discriminator(g.discriminator, base_channels=g.base_channels, n_down=g.n_down)
        if adversarial
        else None
    )
    return generator, discriminator


def count_parameters(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


class _SavedBytes:
    """saved_tensors_hooks that add up the distinct storages autograd keeps for backward."""

    def __init__(self, exclude: set[int]) -> None:
        self.seen: set[int] = set(exclude)
        self.bytes = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def _probe_inputs(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(batch, 3, size, size, generator=g)
    composite = (target + 0.1 * torch.rand(batch, 3, 1, 1, generator=g)).clamp(0, 1)
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return target, composite, mask


def _probe_step(
    cfg: DictConfig,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module | None,
    objective: Objective,
    batch: int,
    size: int,
) -> tuple[int, int]:
    """(bytes saved for the generator's backward, FLOPs of the G and D steps) for ``batch``
    random images of ``size`` px, every loss term on."""
    target, composite, mask = _probe_inputs(batch, size)
    step = max(cfg.loss.tone.warmup_steps, cfg.gan.warmup_steps)  # every term on
    rng = torch.Generator().manual_seed(0)
    params = {p.untyped_storage().data_ptr() for p in generator.parameters()}
    if discriminator is not None:
        params |= {p.untyped_storage().data_ptr() for p in discriminator.parameters()}
    saved = _SavedBytes(params)
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=bf16)
    with FlopCounterMode(display=False) as flops:
        if discriminator is not None:
            discriminator.requires_grad_(False)  # as in the generator step
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), autocast:
            refined = generator(composite, mask)
            terms = objective.generator_terms(
                refined.float(), target, mask, step, rng, discriminator
            )
        terms.loss.backward()
        if discriminator is not None:
            discriminator.requires_grad_(True)
            with autocast:  # the module's D step: the same terms, from the same objective
                loss = objective.discriminator_terms(
                    discriminator, target, refined.detach(), mask, rng, tone=terms.tone
                ).loss
            loss.float().backward()
    return saved.bytes, flops.get_total_flops()


_MEASURED: dict[str, StepCost] = {}


def measure_step_cost(cfg: DictConfig, probe_size: int = 64) -> StepCost:
    """FLOPs and memory of one training step of ``cfg`` (see the module docstring); measured
    once per process for each set of the keys it depends on."""
    keys = {k: OmegaConf.select(cfg, k) for k in _COST_KEYS}
    key = json.dumps(OmegaConf.to_container(OmegaConf.create(keys)), sort_keys=True)
    key += f"/{probe_size}"
    if key not in _MEASURED:
        _MEASURED[key] = _measure(cfg, probe_size)
    return _MEASURED[key]


_COST_KEYS = ("model", "loss", "gan", "optim.ema_decay", "trainer.precision", "data.crop_size")


def _measure(cfg: DictConfig, probe_size: int) -> StepCost:
    cfg = copy.deepcopy(cfg)
    # R1 is a double backward through D, which torch's FLOP counter refuses: not counted.
    cfg.gan.r1_gamma = 0.0
    lpips = cfg.loss.lpips > 0 or cfg.loss.tone_lpips > 0
    if lpips and lpips_files(cfg.loss.lpips_net, cfg.loss.lpips_weights).missing_message():
        cfg.loss.lpips = cfg.loss.tone_lpips = 0.0  # an estimate without LPIPS, not none
    stride = 2**cfg.model.depth
    probe_size = max(stride, probe_size // stride * stride)
    generator, discriminator = build_networks(cfg)
    objective = Objective(cfg)
    # Batches of 1 and 2: the difference is what one image adds. Under autocast the
    # low-precision copies of the weights are saved too; they do not grow with the batch.
    saved_1, flops_1 = _probe_step(cfg, generator, discriminator, objective, 1, probe_size)
    saved_2, flops_2 = _probe_step(cfg, generator, discriminator, objective, 2, probe_size)
    per_image, fixed = saved_2 - saved_1, max(0, 2 * saved_1 - saved_2)
    scale = (cfg.data.crop_size / probe_size) ** 2
    n_g, n_d = count_parameters(generator), count_parameters(discriminator)
    # float32: G weights + grads + 2 Adam moments (+ EMA), D weights + grads + 2 moments.
    ema = int(cfg.optim.ema_decay > 0)
    checkpoint = 4 * (n_g * (3 + ema) + n_d * 3)
    return StepCost(
        generator_params=n_g,
        discriminator_params=n_d,
        crop_size=cfg.data.crop_size,
        flops_per_image=(flops_2 - flops_1) * scale,
        activation_bytes_per_image=per_image * scale,
        state_bytes=checkpoint + 4 * (n_g + n_d) + fixed,  # + gradients, low-precision copies
        checkpoint_bytes=checkpoint,
        lpips_counted=objective.lpips is not None or not lpips,
    )
