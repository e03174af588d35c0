"""The objective: which terms exist, their weights and warm-ups, and training with all of
them (tone mapping, GAN with R1, LPIPS when staged), including the non-finite guard."""

import pytest
import torch

from pixperfect.training.objective import Objective

OFF = [
    "loss.lpips=0",
    "loss.adversarial=0",
    "loss.tone_l1=0",
    "loss.tone_lpips=0",
    "loss.tone_adversarial=0",
]
FULL = [  # every term but LPIPS (no weights here), small D, warm-ups off
    "loss.l1=64",
    "loss.mse=0",
    "loss.lpips=0",
    "loss.adversarial=1",
    "loss.tone_l1=64",
    "loss.tone_lpips=0",
    "loss.tone_adversarial=1",
    "loss.tone.warmup_steps=0",
    "loss.tone.samples_per_region=256",
    "gan.base_channels=4",
    "gan.n_down=2",
    "gan.r1_every=2",
]


def _terms(cfg, pred, target, step=0):
    mask = torch.zeros(pred.shape[0], 1, *pred.shape[-2:])
    mask[..., 2:6, 2:6] = 1
    return Objective(cfg).generator_terms(pred, target, mask, step, torch.Generator()).terms


def test_a_loss_term_with_weight_zero_is_not_computed(tiny_config):
    cfg = tiny_config(*OFF, "loss.l1=1.0", "loss.mse=0.0")
    terms = _terms(cfg, torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8))
    assert set(terms) == {"l1", "loss"}


def test_the_total_is_the_weighted_sum_of_the_terms(tiny_config):
    pred, target = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)
    terms = _terms(tiny_config(*OFF, "loss.l1=2.0", "loss.mse=4.0"), pred, target)
    assert torch.isclose(terms["l1"], torch.tensor(0.5))
    assert torch.isclose(terms["mse"], torch.tensor(0.25))
    assert torch.isclose(terms["loss"], torch.tensor(2.0 * 0.5 + 4.0 * 0.25))


def test_discriminative_terms_wait_for_their_warm_up(tiny_config):
    cfg = tiny_config(*OFF, "loss.tone_l1=1", "loss.tone.warmup_steps=10", "trainer.max_steps=20")
    pred, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert "tone_l1" not in _terms(cfg, pred, target, step=9)
    late = _terms(cfg, pred, target, step=10)
    # Amplified about beta (>= 20) where the curve can, so far above the RGB error.
    assert late["tone_l1"] > (pred - target).abs().mean()


def test_missing_lpips_weights_refuse_with_the_file_or_are_skipped_when_allowed(
    tiny_config, tmp_path
):
    cfg = tiny_config(*OFF, "loss.lpips=5", f"loss.lpips_weights={tmp_path}")
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        Objective(cfg)
    skipped = Objective(tiny_config(*OFF, "loss.lpips=5", "loss.lpips_missing=skip"))
    assert skipped.lpips_disabled and "lpips" not in skipped.active(0)


def test_training_with_tone_mapping_gan_and_r1_saves_and_resumes_both_networks(tiny_config):
    from pixperfect.training.train import train

    cfg = tiny_config(*FULL, "trainer.max_steps=3")
    ckpt = torch.load(train(cfg) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3  # generator steps, whatever D does
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    assert ckpt["discriminator_steps"] == 3 and ckpt["discriminator_optimizer"]["state"]
    resumed = torch.load(
        train(tiny_config(*FULL, "trainer.max_steps=5")) / "checkpoints" / "last.ckpt",
        weights_only=False,
    )
    assert resumed["global_step"] == 5 and resumed["discriminator_steps"] == 5


def test_a_non_finite_loss_skips_the_step_and_is_counted(tiny_config):
    from omegaconf import OmegaConf

    from pixperfect.training.module import RefinerModule
    from pixperfect.training.run_folder import run_dir
    from pixperfect.training.train import build_trainer

    cfg = tiny_config(*FULL)
    module = RefinerModule(OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, run_dir(cfg))
    batch = {"target": torch.rand(2, 3, 32, 32)}
    batch["target"][0, 0, 0, 0] = float("nan")  # poisons the composite and every loss

    class TwoBatches(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from (batch, batch)

    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    # Skipped steps do not advance global_step, so stop on the epoch, not on max_steps.
    trainer.fit_loop.max_epochs = 1
    trainer.fit(module, torch.utils.data.DataLoader(TwoBatches(), batch_size=None))
    assert int(module.skipped_steps) >= 2
    assert all(torch.equal(v, before[k]) for k, v in module.generator.state_dict().items())


def test_tone_mapping_and_the_loss_sum_stay_float32_under_bf16_autocast(tiny_config):
    cfg = tiny_config(*OFF, "loss.tone_l1=1", "loss.tone.warmup_steps=0")
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = Objective(cfg).generator_terms(pred.bfloat16(), target, mask, 0, torch.Generator())
    assert result.tone.pred.dtype == torch.float32
    assert result.loss.dtype == torch.float32 and torch.isfinite(result.loss)


def test_bf16_mixed_training_with_every_term_steps_without_skipping(tiny_config):
    from pixperfect.training.train import train

    cfg = tiny_config(*FULL, "trainer.max_steps=2", "trainer.precision=bf16-mixed")
    ckpt = torch.load(train(cfg) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["discriminator_steps"] == 2
    assert int(ckpt["state_dict"]["skipped_steps"]) == 0


def test_staged_lpips_weights_train_both_lpips_terms_and_score_validation(tiny_config, tmp_path):
    """Random AlexNet features staged as the backbone file: this exercises the wiring only;
    the values are not LPIPS and are never reported as such."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torchvision.models import alexnet

    from pixperfect.training.train import train

    weights = tmp_path / "lpips_weights"
    weights.mkdir()
    state = {k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(state, weights / "alexnet-owt-7be5be79.pth")
    cfg = tiny_config(
        *OFF,
        "loss.lpips=5",
        "loss.tone_lpips=5",
        "loss.tone.warmup_steps=0",
        "loss.tone.samples_per_region=256",
        f"loss.lpips_weights={weights}",
        "trainer.val_every_n_steps=2",
    )
    events = EventAccumulator(str(train(cfg) / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/lpips", "train/tone_lpips", "val/lpips", "val/band_ciede2000"} <= scalars
