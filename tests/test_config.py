from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pixperfect.cli import main
from pixperfect.config import DEFAULTS_FILE, Config, ConfigError, defaults_yaml, load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def test_unknown_override_key_is_refused_with_the_key_named():
    with pytest.raises(ConfigError, match=r"trainer\.max_stepz"):
        load_config(DEMO, ["trainer.max_stepz=3"])


def test_unknown_key_in_experiment_file_is_refused_with_the_key_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sim:\n  colour:\n    hue_shift: [0, 1]\n")
    with pytest.raises(ConfigError, match=r"sim\.colour\.hue_shift"):
        load_config(bad)


def test_wrong_type_is_refused_with_the_key_named():
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_config(DEMO, ["data.batch_size=many"])


def test_reversed_range_is_refused():
    with pytest.raises(ConfigError, match=r"sim\.colour\.gamma"):
        load_config(DEMO, ["sim.colour.gamma=[1.2,0.8]"])


def test_crop_size_must_fit_the_model_stride():
    with pytest.raises(ConfigError, match="stride"):
        load_config(DEMO, ["data.crop_size=100"])


def test_layers_merge_in_order_defaults_experiment_overrides():
    cfg = load_config(DEMO, ["model.base_channels=12"])
    assert cfg.trainer.max_steps == OmegaConf.load(DEMO).trainer.max_steps  # experiment
    assert cfg.model.base_channels == 12  # override beats experiment
    assert cfg.eval.band_width == Config().eval.band_width  # default
    assert cfg.run.name == "demo"  # named after the experiment file


def test_defaults_file_lists_every_key_with_the_schema_defaults():
    assert DEFAULTS_FILE.read_text() == defaults_yaml(), (
        "src/pixperfect/defaults.yaml drifted from the schema: regenerate it with "
        "`pixperfect config --defaults > src/pixperfect/defaults.yaml`"
    )


def test_a_missing_defaults_layer_is_refused_naming_it_not_skipped(tmp_path):
    missing = tmp_path / "defaults.yaml"
    with pytest.raises(ConfigError, match=f"defaults layer {missing} is missing.*reinstall"):
        load_config(DEMO, defaults=missing)


def test_cli_refuses_a_bad_key_before_launching(tmp_path, capsys):
    code = main(["train", "--config", str(DEMO), f"run.root={tmp_path}", "optim.lrr=1"])
    assert code == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing launched, nothing written


def test_a_warm_up_as_long_as_the_run_is_refused_naming_the_terms_it_would_switch_off():
    with pytest.raises(ConfigError, match=r"loss\.tone\.warmup_steps=1000 .*loss\.tone_l1"):
        load_config(None, ["loss.tone.warmup_steps=1000", "trainer.max_steps=1000"])
    with pytest.raises(ConfigError, match=r"gan\.warmup_steps=50 .*loss\.adversarial"):
        load_config(
            None, ["gan.warmup_steps=50", "trainer.max_steps=50", "loss.tone.warmup_steps=0"]
        )
    # On the defaults every term switches on inside the run.
    cfg = load_config(None)
    assert cfg.loss.tone.warmup_steps < cfg.trainer.max_steps
    # A warm-up of switched-off terms is not a problem.
    load_config(DEMO, ["loss.tone.warmup_steps=5000"])


@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_float16_mixed_precision_is_refused_pointing_to_bf16(precision):
    with pytest.raises(ConfigError, match="bf16-mixed"):
        load_config(DEMO, [f"trainer.precision={precision}"])


def test_model_width_defaults_to_each_architectures_own():
    from pixperfect.models import build_refiner

    cfg = OmegaConf.to_container(
        load_config(DEMO, ["model.name=ffc", "model.base_channels=null"]).model
    )
    model = build_refiner(cfg.pop("name"), **cfg)
    assert 38e6 <= sum(p.numel() for p in model.parameters()) <= 44e6
