"""What a run writes to TensorBoard once per launch, besides the step's scalars and images:

- ``config`` (Text tab): the resolved config as YAML;
- the hparams summary (HParams tab): the config flattened to ``section.key`` scalars and
  strings, and the metrics the tab shows for the run, the latest values of the validation
  scores (``val/band_psnr``, ...) and of ``train/loss``, read from the run's own scalars as
  they are written (so the tab shows real numbers, not Lightning's ``hp_metric = -1``);
- a custom-scalars layout (Custom Scalars tab) that groups the scalars by what an engineer
  looks at together: the generator's losses (``train/*``), the discriminator (``d/*``),
  validation (``val/*``), optimisation (``grad_norm/*``, ``lr/*``), throughput (``time/*``:
  over every rank and step of the log window, training/monitor.py),
  memory (``memory/*``) and diagnostics (``diag/*``, ``grad/*``, ``val_family/*``,
  ``train_family/*``: training/diagnostics.py).

:class:`TensorBoardSummary` writes them at the start of training, on rank 0 only: it is
plain file writing, no collective, and Lightning's logger writes on rank 0 only anyway.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from pixperfect.config import to_yaml
from pixperfect.metrics import METRIC_NAMES

# The metrics' order in the hparams tab, which shows the first five at first: the headline
# band scores lead. (Hyperparameters it sorts by name, and shows the first five.)
HEADLINE_METRICS = ("band_psnr", "band_ciede2000", "band_ssim", "lpips", "seam_grad")


def flat_hparams(config: dict) -> dict[str, float | int | str]:
    """``config`` (nested dicts) as ``{"section.key": value}``, with values TensorBoard's
    hparams accept: numbers, strings (lists and null as their YAML, booleans as
    ``true``/``false``)."""
    flat: dict[str, float | int | str] = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool):
            flat[prefix] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            flat[prefix] = value
        elif value is None:
            flat[prefix] = "null"
        else:  # lists (ranges, betas, holdout photos)
            flat[prefix] = str(list(value)).replace("'", "")

    visit("", config)
    return flat


def hparam_metrics(lpips: bool) -> list[str]:
    """The scalar tags the hparams tab shows for each run (their latest values)."""
    names = [*HEADLINE_METRICS, *(n for n in METRIC_NAMES if n not in HEADLINE_METRICS)]
    return [f"val/{n}" for n in names if lpips or n != "lpips"] + ["train/loss"]


def _multiline(pattern: str) -> list:
    return ["Multiline", [pattern]]


# The Custom Scalars tab: {category: {chart: ["Multiline", [tag regex]]}}. The same for every
# run (a chart of terms a run does not compute stays empty): TensorBoard merges the layouts of
# the runs under its logdir and drops only charts that are identical.
CUSTOM_SCALARS_LAYOUT = {
    "Generator losses": {
        "G loss: the weighted sum (train/loss)": _multiline(r"^train/loss$"),
        # Every RGB term, present and future: what is not the sum, a count or tone-space.
        "G terms in RGB (train/l1, mse, lpips, adversarial)": _multiline(
            r"^train/(?!loss$|skipped_steps$|tone_)"
        ),
        "G terms in the tone space (train/tone_*)": _multiline(r"^train/tone_"),
        "Skipped steps, non-finite loss (train/skipped_steps)": _multiline(
            r"^train/skipped_steps$"
        ),
    },
    "Discriminator": {
        "D loss (d/loss)": _multiline(r"^d/loss$"),
        "D logits: real, fake, fake in G's step (d/logits_*)": _multiline(r"^d/logits_"),
        "R1 penalty, lazy (d/r1)": _multiline(r"^d/r1$"),
    },
    "Validation (EMA weights, held-out photos)": {
        "PSNR, dB: whole, band, inner and outer band (val/*psnr)": _multiline(r"^val/.*psnr$"),
        "CIEDE2000: band, inner and outer band (val/*ciede2000)": _multiline(r"^val/.*ciede2000$"),
        "SSIM: whole, band (val/*ssim)": _multiline(r"^val/.*ssim$"),
        "L1: whole, band (val/l1, val/band_l1)": _multiline(r"^val/(band_)?l1$"),
        "Seam gradient (val/seam_grad)": _multiline(r"^val/seam_grad$"),
        "LPIPS (val/lpips)": _multiline(r"^val/lpips$"),
    },
    "Optimisation": {
        "Gradient L2 norm before clipping (grad_norm/*)": _multiline(r"^grad_norm/"),
        "Learning rates (lr/*)": _multiline(r"^lr/"),
    },
    # Each time/* scalar is over every rank and every step of the log window
    # (training/monitor.py): mean, max and p95, so a slow rank or a spike is seen.
    "Throughput": {
        "Images/s per device and over all devices (time/images_per_s, time/images_per_s_total)": (
            _multiline(r"^time/images_per_s(_total)?$")
        ),
        "Model FLOP utilisation, where the peak is known (time/mfu)": _multiline(r"^time/mfu$"),
        "Step seconds over ranks and steps: mean, max, p95 (time/step_s_*)": _multiline(
            r"^time/step_s_"
        ),
        "Data-wait share of the step: mean, max, p95 (time/data_wait_share_*)": _multiline(
            r"^time/data_wait_share_"
        ),
        "Data-wait seconds: mean, max, p95 (time/data_s_*)": _multiline(r"^time/data_s_"),
        "Seconds before the step's first collective, and the simulation in it "
        "(time/presync_s_*, time/simulation_s_*)": _multiline(r"^time/(presync|simulation)_s_"),
        "Slowest rank, the one the others wait for (time/slowest_rank)": _multiline(
            r"^time/slowest_rank$"
        ),
        "Slowest rank's lag behind the median rank, s per step (time/slowest_rank_lag_s)": (
            _multiline(r"^time/slowest_rank_lag_s$")
        ),
        "Data skipped: all, and corpus images per reason (data/corrupt_skipped, "
        "data/skipped_*)": _multiline(r"^data/(corrupt_skipped|skipped_\w+)$"),
    },
    "Memory": {"Peak memory, GiB (memory/*)": _multiline(r"^memory/")},
    # Why a refiner learns nothing on top of its prior (training/diagnostics.py).
    "Diagnostics": {
        "Prior gate opening, mean sigmoid: inside, band, outside (diag/gate_open_*)": _multiline(
            r"^diag/gate_open_"
        ),
        "Correction, mean |c| in 8-bit levels (diag/correction_mean_*)": _multiline(
            r"^diag/correction_mean_"
        ),
        "Correction, max |c| in 8-bit levels (diag/correction_max_*)": _multiline(
            r"^diag/correction_max_"
        ),
        "Gradient norm reaching the body via the head, the gate (diag/grad_body_via_*)": (
            _multiline(r"^diag/grad_body_via_")
        ),
        "Mean |grad| per parameter element, per level, vs Adam's eps (grad/<level>)": _multiline(
            r"^grad/(?!head_over_deepest$|levels_below_adam_eps$)"
        ),
        "Head's mean |grad| over the smallest level's (grad/head_over_deepest)": _multiline(
            r"^grad/head_over_deepest$"
        ),
        "Levels below Adam's eps (grad/levels_below_adam_eps)": _multiline(
            r"^grad/levels_below_adam_eps$"
        ),
        "Validation band PSNR per family, refined and identity (val_family/*)": _multiline(
            r"^val_family/.*band_psnr$"
        ),
        "Validation band-PSNR gain per family (val_family/*/band_psnr_gain)": _multiline(
            r"^val_family/.*/band_psnr_gain$"
        ),
        "Validation gain over the colour prior per family (val_family/*/gain_over_prior)": (
            _multiline(r"^val_family/.*/gain_over_prior$")
        ),
        "Validation harm rate per family, % (val_family/*/harm_rate)": _multiline(
            r"^val_family/.*/harm_rate$"
        ),
        "Training band-PSNR gain per family (train_family/*)": _multiline(r"^train_family/"),
    },
}


def config_markdown(yaml_text: str) -> str:
    """The Text tab renders Markdown: the YAML as a code block, indentation kept."""
    return "```yaml\n" + yaml_text.rstrip() + "\n```"


def write_hparams(logger: TensorBoardLogger, params: dict, metrics: list[str]) -> None:
    """The hparams plugin's three summaries (experiment, session start, session end), as
    Lightning's ``log_hyperparams(params, metrics)`` writes them, but without writing a
    value for the metrics: the tab reads each metric's latest value from the run's scalars,
    so the validation scores appear there when validation logs them."""
    from torch.utils.tensorboard.summary import hparams

    writer = logger.experiment._get_file_writer()
    for summary in hparams(params, dict.fromkeys(metrics, 0.0)):
        writer.add_summary(summary)


class TensorBoardSummary(Callback):
    """At the start of training, on rank 0 (no collective): the config as text, the hparams
    summary and the custom-scalars layout into every TensorBoard logger of the trainer."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        config = pl_module.hparams["config"]
        metrics = hparam_metrics(pl_module.val_lpips is not None)
        text = config_markdown(to_yaml(pl_module.cfg))
        for logger in loggers:
            experiment = logger.experiment
            experiment.add_text("config", text, global_step=trainer.global_step)
            experiment.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)
            write_hparams(logger, flat_hparams(config), metrics)
            experiment.flush()
