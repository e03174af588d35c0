"""The one config system: a typed schema, then defaults, experiment file, overrides.

    schema (dataclasses below, types + built-in defaults)
      <- pixperfect/defaults.yaml       (every key, package data; kept equal to the schema)
      <- the experiment file (--config; relative paths in it: from the working directory)
      <- key=value overrides from the command line

Everything is validated before anything launches: an unknown key or a wrong type is refused
with the key named; ranges and choices are checked by :func:`validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from data_sim.simulator import SimConfig
from pixperfect.losses.lpips import LPIPS_NETS
from pixperfect.models import DISCRIMINATORS, REFINERS
from pixperfect.models.colour_prior import COLOUR_PRIORS
from pixperfect.packaged import DEFAULTS_FILE
from pixperfect.models.model_config import ModelConfig
from pixperfect.shards.build import SMALL_IMAGES


class ConfigError(ValueError):
    """A config that must not launch, with the offending key named."""


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
    # CPU ranks (gloo) too (training/train.py: RunDDPStrategy), so tests run it.
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


# The registries themselves, not copies: an architecture registered is a valid choice.
CHOICES = {
    "data.source": ("skimage", "folder", "shards", "corpus"),
    "data.small_images": SMALL_IMAGES,
    "model.name": REFINERS,
    "model.colour_prior": COLOUR_PRIORS,
    "loss.lpips_missing": ("error", "skip"),
    "loss.lpips_net": LPIPS_NETS,
    "gan.discriminator": DISCRIMINATORS,
    "optim.schedule": ("constant", "cosine"),
    "model.ffc_norm": ("group", "none"),
}


def _merge(base: DictConfig, layer: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        raise ConfigError(
            f"unknown config key '{e.full_key}' in {origin}; see {DEFAULTS_FILE.name} for the "
            "valid keys"
        ) from None
    except ValidationError as e:
        raise ConfigError(f"bad value for '{e.full_key}' in {origin}: {e.msg}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot read {origin}: {e}") from None


def load_config(
    experiment: str | Path | None = None,
    overrides: list[str] | None = None,
    defaults: str | Path | None = DEFAULTS_FILE,
) -> DictConfig:
    """Schema <- defaults file <- experiment file <- ``key=value`` overrides, validated."""
    cfg = OmegaConf.structured(Config)
    if defaults is not None:
        if not Path(defaults).is_file():
            raise ConfigError(
                f"the defaults layer {defaults} is missing: it is package data of pixperfect "
                "(pixperfect/defaults.yaml); reinstall pixperfect, or regenerate it in a "
                "checkout with `pixperfect config --defaults > src/pixperfect/defaults.yaml`"
            )
        cfg = _merge(cfg, OmegaConf.load(defaults), str(defaults))
    if experiment is not None:
        path = Path(experiment)
        if not path.is_file():
            raise ConfigError(f"experiment file {path} does not exist")
        cfg = _merge(cfg, OmegaConf.load(path), str(path))
        if "name" not in OmegaConf.load(path).get("run", {}):
            cfg.run.name = path.stem  # a run is named after its experiment file by default
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override '{item}'")
    validate(cfg)
    return cfg


def from_container(config: dict) -> DictConfig:
    """A typed, validated config from a plain dict (e.g. the one stored in a checkpoint)."""
    cfg = _merge(OmegaConf.structured(Config), config, "the stored config")
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks the type system cannot express: choices, ranges, consistency."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    try:
        OmegaConf.to_object(cfg.sim).validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    weights = {
        k: v for k, v in cfg.loss.items() if isinstance(v, (int, float)) and k not in LOSS_SETTINGS
    }
    negative = [k for k, v in weights.items() if v < 0]
    pixel = [k for k in weights if not k.endswith("adversarial")]  # a term new to LossConfig too
    if negative or not any(weights[k] > 0 for k in pixel):
        raise ConfigError(
            f"loss weights must be >= 0 (negative: {', '.join(f'loss.{k}' for k in negative)}) "
            f"and at least one of {', '.join(f'loss.{k}' for k in pixel)} > 0"
        )
    lo, hi = cfg.loss.tone.beta
    if not 0 < lo <= hi or cfg.loss.tone.degree < 1 or cfg.loss.tone.samples_per_region < 1:
        raise ConfigError(
            "loss.tone.beta must be 0 < lo <= hi, loss.tone.degree >= 1, "
            "loss.tone.samples_per_region >= 1"
        )
    if cfg.gan.r1_every < 1 or cfg.gan.r1_gamma < 0 or cfg.gan.instance_noise < 0:
        raise ConfigError("gan.r1_every must be >= 1, gan.r1_gamma and gan.instance_noise >= 0")
    if not 0 <= cfg.optim.ema_decay < 1:
        raise ConfigError(f"optim.ema_decay={cfg.optim.ema_decay} must be in [0, 1)")
    positive = [
        "data.crop_size",
        "data.batch_size",
        "trainer.max_steps",
        "model.depth",
        "eval.band_width",
        "eval.samples_per_image",
        "data.val_samples_per_image",
        "data.epoch_samples",
        "trainer.ddp_timeout_s",
        "trainer.preempt_poll_every",
    ]
    for key in positive:
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} must be > 0")
    if cfg.model.base_channels is not None and cfg.model.base_channels <= 0:
        raise ConfigError(f"model.base_channels={cfg.model.base_channels} must be > 0 (or null)")
    _check_warmups(cfg)
    _check_trainer(cfg.trainer)
    lo, hi = cfg.data.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.crop_scale=[{lo}, {hi}] must satisfy 0 < lo <= hi <= 1")
    if not 0 < cfg.loss.psnr_floor_db <= 100:
        raise ConfigError(f"loss.psnr_floor_db={cfg.loss.psnr_floor_db} must be in (0, 100]")
    if cfg.model.blocks < 0:
        raise ConfigError(f"model.blocks={cfg.model.blocks} must be >= 0")
    if not (cfg.optim.eps > 0 and 0 <= cfg.optim.min_lr_ratio <= 1 and cfg.optim.warmup_steps >= 0):
        raise ConfigError(
            f"optim.eps={cfg.optim.eps} must be > 0, optim.min_lr_ratio="
            f"{cfg.optim.min_lr_ratio} in [0, 1], optim.warmup_steps={cfg.optim.warmup_steps} >= 0"
        )
    if cfg.model.ffc_blocks < 0 or not 0 < cfg.model.global_ratio < 1:
        raise ConfigError(
            f"model.ffc_blocks={cfg.model.ffc_blocks} must be >= 0 and model.global_ratio="
            f"{cfg.model.global_ratio} in (0, 1)"
        )
    stride = 2**cfg.model.depth
    for key in ("data.crop_size", "data.val_crop_size"):
        if OmegaConf.select(cfg, key) % stride:
            raise ConfigError(
                f"{key}={OmegaConf.select(cfg, key)} must be a multiple of the model stride "
                f"{stride} (2**model.depth)"
            )
    _check_data_source(cfg)
    if cfg.data.min_side is not None and cfg.data.min_side < 1:
        raise ConfigError(f"data.min_side={cfg.data.min_side} must be >= 1 (or null: crop size)")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers={cfg.data.num_workers} must be >= 0")


# What each data.source needs beside it.
SOURCE_NEEDS = {
    "folder": ("images", "data.images=<folder of training photos>"),
    "shards": ("shards", "data.shards=<folder with manifest.json>"),
    "corpus": ("corpus", "data.corpus=<tar pattern, URL or .txt list of tars>"),
}


def _check_data_source(cfg: DictConfig) -> None:
    key, hint = SOURCE_NEEDS.get(cfg.data.source, (None, ""))
    if key and not cfg.data[key]:
        raise ConfigError(f"data.source={cfg.data.source} needs {hint}")


def _check_warmups(cfg: DictConfig) -> None:
    """A warm-up as long as the run would switch its terms off without a word: refuse it."""
    max_steps = cfg.trainer.max_steps
    groups = (
        (
            "loss.tone.warmup_steps",
            tuple(f.name for f in fields(LossConfig) if f.name.startswith("tone_")),
        ),
        ("gan.warmup_steps", ("adversarial", "tone_adversarial")),
    )
    for key, terms in groups:
        warmup = OmegaConf.select(cfg, key)
        on = [f"loss.{t}" for t in terms if cfg.loss[t] > 0]
        if warmup < 0:
            raise ConfigError(f"{key}={warmup} must be >= 0")
        if on and warmup >= max_steps:
            raise ConfigError(
                f"{key}={warmup} >= trainer.max_steps={max_steps}: {', '.join(on)} would never "
                f"switch on; lower {key} (e.g. {max_steps // 5}) or set those weights to 0"
            )


def _check_trainer(trainer: DictConfig) -> None:
    _check_precision(trainer.precision)
    if trainer.peak_tflops is not None and trainer.peak_tflops <= 0:
        raise ConfigError(f"trainer.peak_tflops={trainer.peak_tflops} must be > 0 (or null)")


def _check_precision(precision: str) -> None:
    # float16 needs a gradient scaler: Lightning's is bypassed by manual optimisation (the
    # discriminator's Adam is stepped directly), so scaled gradients would be clipped and
    # stepped as they are. bfloat16 has float32's range and needs no scaler.
    if str(precision) in ("16", "16-mixed", "16-true", "half"):
        raise ConfigError(
            f"trainer.precision={precision!r} is not supported (float16 needs loss scaling, "
            "which manual optimisation bypasses); use trainer.precision=bf16-mixed on GPUs "
            "(Ampere or newer) or 32-true"
        )


def sim_config(cfg: DictConfig) -> SimConfig:
    """The simulation section as the dataclass ``data_sim`` expects."""
    return OmegaConf.to_object(cfg.sim)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def defaults_yaml() -> str:
    """src/pixperfect/defaults.yaml: every key with its schema default, short lists inline."""
    import yaml

    body = yaml.safe_dump(
        OmegaConf.to_container(OmegaConf.structured(Config)),
        default_flow_style=None,
        sort_keys=False,
    )
    return (
        "# Every config key with its default. Generated from the schema in\n"
        "# src/pixperfect/config.py (and data_sim's dataclasses) by\n"
        "#   pixperfect config --defaults > src/pixperfect/defaults.yaml\n"
        "# A test keeps it equal to the schema; change defaults there, not here.\n" + body
    )
