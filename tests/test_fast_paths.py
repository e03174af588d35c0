"""The fast paths behind config switches (training/fast_paths.py), each exercised on CPU:
the foreach EMA equals the loop, Adam's kernel choice, channels_last outputs equal NCHW's,
a compiled generator trains a step and its checkpoint loads uncompiled (and back), and a
checkpoint saved at step N holds the EMA of N updates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from pixperfect.models import build_refiner
from pixperfect.models.ffc import FourierUnit
from pixperfect.training import fast_paths
from pixperfect.training.fast_paths import (
    adam_kernel,
    apply_backend_flags,
    ema_update,
    to_channels_last,
)
from pixperfect.training.module import RefinerModule
from pixperfect.training.train import train


def test_the_foreach_ema_equals_the_loop_ema():
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (1, 8, 1, 1), (16, 8)]
    live = [torch.randn(s, generator=g) for s in shapes]
    ema = [torch.randn(s, generator=g) for s in shapes]
    loop, fused = [e.clone() for e in ema], [e.clone() for e in ema]
    for weight in (0.1, 0.5, 0.001):
        ema_update(loop, live, weight, foreach=False)
        ema_update(fused, live, weight, foreach=True)
        for a, b in zip(loop, fused, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_the_module_ema_is_the_same_with_and_without_foreach(tiny_config):
    modules = []
    for foreach in ("true", "false"):
        torch.manual_seed(0)
        module = RefinerModule(
            OmegaConf.to_container(
                tiny_config("optim.ema_decay=0.9", f"optim.ema_foreach={foreach}")
            )
        )
        with torch.no_grad():
            for p in module.generator.parameters():
                p.add_(0.5)
        module.update_ema()
        modules.append(module)
    for a, b in zip(*(m.generator_ema.parameters() for m in modules), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_adam_kernel_is_fused_on_cuda_and_foreach_elsewhere():
    assert adam_kernel("cuda", fused=True) == {"fused": True}
    assert adam_kernel("cpu", fused=True) == {"foreach": True}
    assert adam_kernel("mps", fused=True) == {"foreach": True}
    assert adam_kernel("cuda", fused=False) == {} == adam_kernel("cpu", fused=False)


def test_configure_optimizers_asks_for_the_kernel_of_the_module_device(tiny_config, monkeypatch):
    module = RefinerModule(OmegaConf.to_container(tiny_config("optim.fused=true")))
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]

    asked = []

    class FakeAdam:
        def __init__(self, params, **kwargs) -> None:
            asked.append(kwargs)

    monkeypatch.setattr(torch.optim, "Adam", FakeAdam)
    module._device = torch.device("cuda", 0)  # a fake device type: only the choice is tested
    module.configure_optimizers()
    assert asked[-1]["fused"] is True and "foreach" not in asked[-1]


def test_cudnn_benchmark_switch():
    before = torch.backends.cudnn.benchmark
    try:
        apply_backend_flags(True)
        assert torch.backends.cudnn.benchmark is True
        apply_backend_flags(False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def _tiny_ffc() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_refiner("ffc", base_channels=8, depth=2, ffc_blocks=2, global_ratio=0.75)


def test_channels_last_ffc_gives_the_nchw_outputs_and_skips_the_spectral_convolutions():
    reference, fast = _tiny_ffc(), to_channels_last(_tiny_ffc())
    spectral = {id(m) for u in fast.modules() if isinstance(u, FourierUnit) for m in u.modules()}
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert spectral and any(id(m) in spectral for m in convs)
    for m in convs:
        nhwc = m.weight.is_contiguous(memory_format=torch.channels_last)
        assert nhwc == (id(m) not in spectral) or m.weight.shape[-2:] == (1, 1)
    assert reference.state_dict().keys() == fast.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    composite = torch.rand(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(
            fast(composite, mask), reference(composite, mask), rtol=1e-4, atol=1e-5
        )


def _generator_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("generator.")}


@pytest.mark.slow
def test_a_compiled_generator_trains_and_its_checkpoint_loads_uncompiled_and_back(
    tiny_config, monkeypatch
):
    # aot_eager: dynamo's capture and AOT autograd as on a GPU, without inductor's C++
    # compilation (minutes on this machine); inductor is timed by benchmarks/gpu_check.py.
    monkeypatch.setattr(fast_paths, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    torch._dynamo.reset()
    overrides = ("trainer.max_steps=1", "trainer.channels_last=true", "optim.ema_decay=0.9")
    compiled_dir = train(tiny_config("run.name=compiled", "trainer.compile=true", *overrides))
    plain_dir = train(tiny_config("run.name=plain", *overrides))
    compiled = _generator_state(compiled_dir / "checkpoints" / "last.ckpt")
    plain = _generator_state(plain_dir / "checkpoints" / "last.ckpt")
    assert compiled.keys() == plain.keys()
    assert not any("_orig_mod" in k for k in compiled)

    cfg = OmegaConf.to_container(tiny_config("trainer.compile=true"), resolve=True)
    for state in (compiled, plain):
        uncompiled = RefinerModule(cfg)  # configure_model not called: not compiled
        uncompiled.load_state_dict({**uncompiled.state_dict(), **state}, strict=True)
        target = RefinerModule(cfg)
        target.configure_model()  # compiled (aot_eager)
        target.load_state_dict({**target.state_dict(), **state}, strict=True)
        g = torch.Generator().manual_seed(2)
        composite = torch.rand(1, 3, 32, 32, generator=g)
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., 8:24, 8:24] = 1
        with torch.no_grad():
            torch.testing.assert_close(
                target.generator(composite, mask),
                uncompiled.generator(composite, mask),
                rtol=1e-4,
                atol=1e-5,
            )
    torch._dynamo.reset()


def test_a_checkpoint_saved_at_step_n_holds_the_ema_of_n_updates(tiny_config):
    decay = 0.9
    cfg = tiny_config(
        f"optim.ema_decay={decay}", "trainer.max_steps=2", "trainer.ckpt_every_n_steps=1"
    )
    directory = train(cfg)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)  # as train() does
    ema = {
        f"generator_ema.{k}": v
        for k, v in RefinerModule(OmegaConf.to_container(cfg, resolve=True))
        .generator.state_dict()
        .items()
    }
    for step in (1, 2):
        state = torch.load(directory / "checkpoints" / f"step={step}.ckpt", weights_only=False)
        assert state["global_step"] == step
        weights = state["state_dict"]
        # the update after generator step `step` uses the decay of global_step == step
        weight = 1 - min(decay, (1 + step) / (10 + step))
        params = dict(RefinerModule(OmegaConf.to_container(cfg)).generator.named_parameters())
        for name in params:
            expected = torch.lerp(
                ema[f"generator_ema.{name}"], weights[f"generator.{name}"], weight
            )
            torch.testing.assert_close(
                weights[f"generator_ema.{name}"], expected, rtol=1e-5, atol=1e-7, msg=name
            )
            ema[f"generator_ema.{name}"] = weights[f"generator_ema.{name}"]
