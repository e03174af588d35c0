"""The one config system: a typed schema, then defaults, experiment file, overrides.

    schema (pixperfect.config_schema: dataclasses, types + built-in defaults)
      <- pixperfect/defaults.yaml       (every key, package data; kept equal to the schema)
      <- the experiment file (--config; relative paths in it: from the working directory)
      <- key=value overrides from the command line

Everything is validated before anything launches: an unknown key or a wrong type is refused
with the key named; ranges and choices are checked by :func:`validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from data_sim.simulator import SimConfig
from pixperfect.config_schema import (  # noqa: F401  (the schema, as it was imported from here)
    TONE_PREFIX,
    Config,
    DataConfig,
    EvalConfig,
    GANConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ToneMapConfig,
    TrainerConfig,
    loss_weights,
)
from pixperfect.errors import ConfigError
from pixperfect.losses.lpips import LPIPS_NETS, ON_MISSING
from pixperfect.models import DISCRIMINATORS, REFINERS
from pixperfect.models.colour_prior import COLOUR_PRIORS
from pixperfect.models.ffc import FFC_NORMS
from pixperfect.packaged import DEFAULTS_FILE
from pixperfect.shards.build import SMALL_IMAGES

# The registries themselves, not copies: an architecture registered is a valid choice.
CHOICES = {
    "data.source": ("skimage", "folder", "shards", "corpus"),
    "data.small_images": SMALL_IMAGES,
    "model.name": REFINERS,
    "model.colour_prior": COLOUR_PRIORS,
    "loss.lpips_missing": ON_MISSING,
    "loss.lpips_net": LPIPS_NETS,
    "gan.discriminator": DISCRIMINATORS,
    "optim.schedule": ("constant", "cosine"),
    "model.ffc_norm": FFC_NORMS,
}


def _merge(base: DictConfig, layer: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        raise ConfigError(
            f"unknown config key '{e.full_key}' in {origin}; `pixperfect config --defaults` "
            "lists the valid keys"
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
    weights = loss_weights(cfg.loss)
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
    weights = loss_weights(cfg.loss)
    groups = (
        ("loss.tone.warmup_steps", [t for t in weights if t.startswith(TONE_PREFIX)]),
        ("gan.warmup_steps", [t for t in weights if t.endswith("adversarial")]),
    )
    for key, terms in groups:
        warmup = OmegaConf.select(cfg, key)
        on = [f"loss.{t}" for t in terms if weights[t] > 0]
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
        "# src/pixperfect/config_schema.py (and data_sim's dataclasses) by\n"
        "#   pixperfect config --defaults > src/pixperfect/defaults.yaml\n"
        "# A test keeps it equal to the schema; change defaults there, not here.\n" + body
    )
