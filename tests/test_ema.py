import torch
from omegaconf import OmegaConf

from pixperfect.inference import Refiner
from pixperfect.training.module import RefinerModule
from pixperfect.training.train import train


def test_ema_follows_the_generator_with_its_decay(tiny_config):
    module = RefinerModule(OmegaConf.to_container(tiny_config("optim.ema_decay=0.5")))
    live, ema = module.generator.head.weight, module.generator_ema.head.weight
    assert torch.equal(live, ema)
    before = ema.clone()
    with torch.no_grad():
        live.add_(1.0)
    module.update_ema()  # step 0: warm-up decay (1 + 0) / (10 + 0) = 0.1
    assert torch.allclose(ema, before + 0.9)


def test_no_ema_is_kept_when_its_decay_is_zero(tiny_config):
    module = RefinerModule(OmegaConf.to_container(tiny_config("optim.ema_decay=0.0")))
    assert module.generator_ema is None
    assert module.evaluation_generator() is module.generator


def test_checkpoints_carry_the_ema_and_refine_uses_it(tiny_config):
    directory = train(tiny_config("optim.ema_decay=0.9"))
    ckpt = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    ema = {
        k[len("generator_ema.") :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("generator_ema.")
    }
    live = {
        k[len("generator.") :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("generator.")
    }
    assert ema.keys() == live.keys()
    assert any(not torch.equal(ema[k], live[k]) for k in ema)
    refiner = Refiner.from_checkpoint(directory / "checkpoints" / "last.ckpt")
    for name, value in refiner.model.state_dict().items():
        assert torch.equal(value, ema[name])
