"""The config's schema: one dataclass per section, with the types and the built-in defaults
(the layer under pixperfect/defaults.yaml, generated from it). The refiner's section is
:class:`~pixperfect.models.model_config.ModelConfig`, the simulator's ``data_sim``'s
:class:`~data_sim.simulator.SimConfig`. Loading, overriding and validating a config:
:mod:`pixperfect.config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from data_sim.simulator import SimConfig
from pixperfect.models.model_config import ModelConfig


@dataclass
class RunConfig:
    name: str = "default"  # run directory: <root>/<name>; resume finds it again
    root: str = "runs"
    seed: int = 0


@dataclass
class DataConfig:
    # skimage: photos bundled with scikit-image; folder: data.images; shards: data.shards;
    # corpus: data.corpus, a webdataset image corpus read where it is (pixperfect.corpus)
    source: str = "skimage"
    corpus: str | None = None  # tar pattern, URL or .txt list of tars (source=corpus)
    images: str | None = None  # training photo folder (source=folder)
    shards: str | None = None  # folder with manifest.json from `pixperfect shards build`
    val_shards: str | None = None  # artifact shards for validation (else held-out photos)
    resample: bool = True  # shards drawn with replacement: an endless stream, equal per rank
    epoch_samples: int = 2048  # samples per rank per virtual epoch (shards)
    shuffle_buffer: int = 256  # samples mixed across shards in each worker
    small_images: str = "skip"  # photos under data.min_side: skip (counted) or upscale
    min_side: int | None = None  # shorter side a photo needs; None: the crop size
    dedupe: bool = False  # skip exact duplicates (same bytes) a reader has already seen
    holdout: list[str] = field(default_factory=lambda: ["chelsea", "coffee"])  # skimage names
    val_images: str | None = None  # held-out photo folder (source=folder)
    crop_size: int = 128
    # Photos seen at a random scale in [lo, hi] (crop size / scale px, downscaled to the
    # crop): 1000 px photos cropped natively hold finer texture than the 512 px photos a
    # refiner is scored on (docs/training.md). [1, 1]: native scale, as before.
    crop_scale: tuple[float, float] = (1.0, 1.0)
    batch_size: int = 8
    num_workers: int = 0
    val_crop_size: int = 192
    val_samples_per_image: int = 4
    val_seed: int = 1234


@dataclass
class ToneMapConfig:
    """The discriminative pixel space (docs/method.md §3)."""

    beta: tuple[float, float] = (20.0, 40.0)  # per-sample error amplification
    degree: int = 5  # of the per-channel polynomial tone curve
    samples_per_region: int = 4096  # fitting pixels drawn inside and outside the mask each
    # Generator steps on RGB terms only before these switch on; must be < trainer.max_steps
    # while a tone_* weight is > 0 (refused otherwise: the terms would never switch on).
    warmup_steps: int = 200


@dataclass
class LossConfig:
    """Weights of the loss terms, in RGB and in the discriminative (tone-mapped) space; a term
    with weight 0 is not built. Paper: L1 64, LPIPS 5, adversarial 1 in both spaces."""

    l1: float = 64.0
    mse: float = 0.0  # learns small colour shifts faster than L1 at CPU scale (docs/training.md)
    # L1 averaged over a Gaussian pyramid (training/objective.py): weighs smooth colour
    # errors against texture errors the way a viewer does
    pyramid_l1: float = 0.0
    # minus the PSNR per sample (dB), averaged: every sample's dB counts alike, so nearly
    # right edits are kept right (training/objective.py)
    psnr: float = 0.0
    psnr_floor_db: float = 50.0  # the psnr term's ceiling: 50 dB is 0.8 8-bit levels RMS
    lpips: float = 5.0
    adversarial: float = 1.0
    tone_l1: float = 64.0
    tone_mse: float = 0.0
    tone_pyramid_l1: float = 0.0
    tone_psnr: float = 0.0
    tone_lpips: float = 5.0
    tone_adversarial: float = 1.0
    tone: ToneMapConfig = field(default_factory=ToneMapConfig)
    lpips_net: str = "alex"
    lpips_weights: str | None = None  # folder with the backbone + linear weights (or torch cache)
    lpips_missing: str = "error"  # LPIPS weights absent: error (name the file) or skip (say so)


LOSS_SETTINGS = ("psnr_floor_db",)  # the numbers of LossConfig that are not term weights
TONE_PREFIX = "tone_"  # a term's twin between the tone-mapped images: tone_<name>


def loss_weights(loss: Mapping[str, Any]) -> dict[str, float]:
    """Each loss term's weight by its key, in the schema's order (``l1``, ..., ``adversarial``,
    ``tone_l1``, ..., ``tone_adversarial``): the numbers of the loss section but
    :data:`LOSS_SETTINGS`. The names are read from the section itself, so :class:`LossConfig`
    is the one list of them: validation, the warm-ups, preflight's report and the objective
    (which finds each term's function in ``PIXEL_TERMS`` by its name) all take them from here.
    """
    return {k: v for k, v in loss.items() if isinstance(v, (int, float)) and k not in LOSS_SETTINGS}


@dataclass
class GANConfig:
    """The mask-conditioned discriminator and its training (docs/method.md §2, §4)."""

    discriminator: str = "patch"
    base_channels: int = 64
    n_down: int = 3  # logits at 1 / 2**n_down of the input side
    lr: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.99)
    r1_gamma: float = 0.01  # lazy R1 on reals; logits are summed over patches, so it is small
    r1_every: int = 16
    instance_noise: float = 0.01  # std of noise on both D inputs
    band: int = 8  # px around the mask that count as fake in a fake image
    warmup_steps: int = 0  # generator steps before the adversarial terms and D training start


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.99)
    # Adam's eps: a gradient far below it barely moves its weight (docs/training.md)
    eps: float = 1e-8
    # constant | cosine: the generator's learning rate after a linear warm-up
    # (training/schedule.py); cosine decays to lr * min_lr_ratio at trainer.max_steps
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    ema_decay: float = 0.0  # > 0: keep an EMA of the generator for validation and refine
    grad_clip: float = 1.0  # max gradient norm for G and D; 0: no clipping
    # EMA over the parameter list in a few multi-tensor kernels (torch._foreach_lerp_): the
    # same numbers as one lerp per parameter (tests/test_fast_paths.py), fewer launches
    ema_foreach: bool = True
    # Adam's fused kernel where the device has one (CUDA); elsewhere the foreach kernel
    # (training/module.py: adam_kernel). Off: torch's own choice.
    fused: bool = False


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    # DDP (strategy ddp, or auto with more than one process): how long a rank waits in a
    # collective (gradient all-reduce, barrier, broadcast) for a peer before it raises and
    # the job ends. A rank that dies outright is seen at once (its sockets close); this bounds
    # a rank that hangs or is stopped. It must outlast the longest legitimate wait: the ranks
    # waiting while rank 0 writes a checkpoint to a slow shared file system, or validates, or
    # a slow first step. 30 min (Lightning's own default) is safe for the paper's recipe.
    ddp_timeout_s: int = 1800
    # How often (in steps) the ranks agree on a preemption signal (SIGUSR1): an all-reduce
    # the host waits for, so not every step. A signal is acted on within this many steps,
    # every rank at the same step: 50 paper steps are seconds against SLURM's 120 s notice.
    preempt_poll_every: int = 50
    # DDP gradient all-reduce in bfloat16 (torch's bf16_compress_hook): half the bytes across
    # nodes; gradients are averaged to bf16 precision, then back to float32. Registered on
    # CPU ranks (gloo) too (training/cluster.py: RunDDPStrategy), so tests run it.
    ddp_bf16_compress: bool = False
    compile: bool = False  # torch.compile the generator's forward (state_dict keys unchanged)
    cudnn_benchmark: bool = False  # cuDNN picks the fastest convolution per shape (CUDA only)
    channels_last: bool = False  # generator weights and inputs in NHWC (training/fast_paths.py)
    precision: str = "32-true"
    log_every_n_steps: int = 10
    val_every_n_steps: int = 250
    ckpt_every_n_steps: int = 250
    image_every_n_steps: int = 250  # image grids; also at steps 1, 10, 50 and 100
    progress_bar: bool = True
    # The device's peak FLOP/s in TFLOP/s for time/mfu (training/monitor.py); null: the data
    # sheet's dense 16-bit peak of a known GPU under bf16, else no time/mfu (CPU, unknown GPU)
    peak_tflops: float | None = None


@dataclass
class EvalConfig:
    band_width: int = 8  # pixels either side of the mask boundary
    samples_per_image: int = 8
    seed: int = 2024
    max_size: int = 512  # held-out images are resized so the longer side is at most this
    crop_size: int | None = None  # random crops of this size instead of whole images


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
