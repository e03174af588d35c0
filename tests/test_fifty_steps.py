"""50 CPU training steps (same seed) give the loss curve and weights they gave before the
sync and transfer work (no host reads in the step, device-side non-finite guard,
preemption polled every N steps, simulation parameters in one copy per batch), to float
tolerance.

The reference, tests/data/fifty_steps.json, was generated from commit b416c7c (the last
commit before that work) by running this file as a script in a clean checkout of it:

    git worktree add /tmp/ref b416c7c
    cd /tmp/ref && PYTHONPATH=/tmp/ref/src:/tmp/ref \\
        <checkout>/.venv/bin/python <checkout>/tests/test_fifty_steps.py WRITE_TO.json

It records the generator's and the discriminator's loss of every step and, at the end, the
sum and the sum of absolute values of every tensor of the generator, its EMA and the
discriminator. The run: the demo's tiny U-Net on 32 px scikit-image crops, artifacts made
in the step, every term but LPIPS (its weights are not bundled) from step 0 with a small
discriminator and lazy R1, the EMA on, a logger that logs every 10th step (so logging and
non-logging steps both run), one thread.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "fifty_steps.json"
STEPS = 50
OVERRIDES = [
    "data.source=skimage",
    "data.num_workers=0",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.val_crop_size=32",
    "data.val_samples_per_image=1",
    "model.base_channels=8",
    "model.depth=2",
    f"trainer.max_steps={STEPS}",
    "trainer.val_every_n_steps=1000",
    "trainer.ckpt_every_n_steps=1000",
    "trainer.log_every_n_steps=10",
    "trainer.image_every_n_steps=1000",
    "trainer.progress_bar=false",
    "trainer.accelerator=cpu",
    "loss.l1=1.0",
    "loss.mse=1.0",
    "loss.adversarial=0.1",
    "loss.tone_l1=1.0",
    "loss.tone_adversarial=0.1",
    "loss.tone.warmup_steps=0",
    "loss.lpips=0",
    "loss.tone_lpips=0",
    "gan.warmup_steps=0",
    "gan.base_channels=4",
    "gan.n_down=2",
    "gan.r1_every=4",
]


def _digest(net: torch.nn.Module | None) -> dict[str, list[float]]:
    if net is None:
        return {}
    return {
        name: [float(t.double().sum()), float(t.double().abs().sum())]
        for name, t in net.state_dict().items()
        if t.is_floating_point()
    }


def run_fifty_steps(root: Path) -> dict:
    """Train STEPS steps of the recipe above in ``root``; the losses and weight digests."""
    from pixperfect.config import load_config
    from pixperfect.training.datamodule import build_datamodule
    from pixperfect.training.module import RefinerModule
    from pixperfect.training.objective import Objective

    cfg = load_config(HERE.parent / "configs" / "demo.yaml", [*OVERRIDES, f"run.root={root}"])
    losses: dict[str, list[float]] = {"generator": [], "discriminator": []}
    g_terms, d_terms = Objective.generator_terms, Objective.discriminator_terms

    def record_g(self, *args, **kwargs):
        out = g_terms(self, *args, **kwargs)
        losses["generator"].append(float(out.loss.detach()))
        return out

    def record_d(self, *args, **kwargs):
        out = d_terms(self, *args, **kwargs)
        losses["discriminator"].append(float(out.loss.detach()))
        return out

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    Objective.generator_terms, Objective.discriminator_terms = record_g, record_d
    try:
        L.seed_everything(cfg.run.seed, workers=True, verbose=False)
        module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
        trainer = L.Trainer(
            default_root_dir=root,
            max_steps=STEPS,
            accelerator="cpu",
            devices=1,
            logger=L.pytorch.loggers.CSVLogger(str(root)),
            log_every_n_steps=10,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=build_datamodule(cfg))
    finally:
        Objective.generator_terms, Objective.discriminator_terms = g_terms, d_terms
        torch.set_num_threads(threads)
    return {
        "losses": losses,
        "generator": _digest(module.generator),
        "generator_ema": _digest(module.generator_ema),
        "discriminator": _digest(module.discriminator),
    }


def test_fifty_cpu_steps_match_the_reference_from_before_the_sync_work(tmp_path):
    import pytest

    reference = json.loads(REFERENCE.read_text())
    now = run_fifty_steps(tmp_path)
    assert len(now["losses"]["generator"]) == STEPS
    for kind in ("generator", "discriminator"):
        assert now["losses"][kind] == pytest.approx(
            reference["losses"][kind], rel=1e-4, abs=1e-6
        ), kind
    for net in ("generator", "generator_ema", "discriminator"):
        assert now[net].keys() == reference[net].keys(), net
        for name, values in reference[net].items():
            assert now[net][name] == pytest.approx(values, rel=1e-4, abs=1e-6), f"{net}.{name}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        result = run_fifty_steps(Path(directory))
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1) + "\n")
