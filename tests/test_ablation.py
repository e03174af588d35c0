"""benchmarks/ablation_losses.py: the arms' configs load and differ only in their loss
weights; the report built from evaluation results shaped by the real
``compare_to_identity`` (a fake results.json per arm); and (slow, about 60 s on 2 idle
cores, 2 min on busy ones) the whole script at a tiny scale: 3 steps an arm, 2 crops and 1
evaluation sample a photo, 3 small photos, no codec."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys

import pytest
from conftest import ROOT

from pixperfect.evaluation.breakdown import compare_by_family, compare_to_identity

sys.path.insert(0, str(ROOT / "benchmarks"))  # its harness, as when run as a script
SPEC = importlib.util.spec_from_file_location(
    "ablation_losses", ROOT / "benchmarks" / "ablation_losses.py"
)
ablation = importlib.util.module_from_spec(SPEC)
sys.modules["ablation_losses"] = ablation  # dataclasses look their module up there
SPEC.loader.exec_module(ablation)


def args_for(tmp_path, steps=100, extra=()):
    return ablation.argparse.Namespace(
        steps=steps, warmup_frac=0.1, out=tmp_path, seed=0, set=list(extra)
    )


def test_arms_differ_only_in_loss_weights(tmp_path):
    args = args_for(tmp_path)
    cfgs = {arm.key: ablation.arm_config(arm, args) for arm in ablation.ARMS.values()}
    for cfg in cfgs.values():
        assert cfg.model.name == "ffc" and cfg.model.base_channels == 16
        assert cfg.model.ffc_blocks == 2 and cfg.model.colour_prior == "reinhard"
        assert cfg.sim.texture.vae.kind == "taesd"
        assert cfg.loss.lpips == 0 and cfg.loss.tone_lpips == 0
        assert cfg.loss.l1 == 64 and cfg.loss.mse == 0
        assert cfg.loss.tone.warmup_steps == 10 and cfg.gan.warmup_steps == 10
        assert cfg.data.shards == str(tmp_path / "shards")
    a, b, c = cfgs["a"], cfgs["b"], cfgs["c"]
    assert (a.loss.tone_l1, a.loss.adversarial, a.loss.tone_adversarial) == (0, 0, 0)
    assert (b.loss.tone_l1, b.loss.adversarial, b.loss.tone_adversarial) == (64, 0, 0)
    assert (c.loss.tone_l1, c.loss.adversarial, c.loss.tone_adversarial) == (64, 1, 1)
    strip = {"run.name", "loss.tone_l1", "loss.adversarial", "loss.tone_adversarial"}

    def shared(arm):
        overrides = ablation.arm_overrides(arm, 100, 0.1, tmp_path, 0)
        return [o for o in overrides if o.split("=")[0] not in strip]

    assert shared(ablation.ARMS["a"]) == shared(ablation.ARMS["b"]) == shared(ablation.ARMS["c"])


def test_tiny_runs_still_switch_the_terms_on(tmp_path):
    # 3 steps at 10%: warm-up 0, not refused by the config's warm-up check
    args = args_for(tmp_path, steps=3, extra=["data.crop_size=32"])
    cfg = ablation.arm_config(ablation.ARMS["c"], args)
    assert cfg.trainer.max_steps == 3 and cfg.gan.warmup_steps == 0
    assert cfg.data.crop_size == 32


def test_parse_arms():
    assert [a.key for a in ablation.parse_arms("c, a,c")] == ["c", "a"]
    with pytest.raises(ValueError):
        ablation.parse_arms("a,d")
    assert ablation.eval_methods("reinhard,poisson") == [
        "identity",
        "reinhard",
        "poisson",
        "refiner",
    ]


def fake_results(offset: float, seed: int = 0) -> dict:
    """A results.json as ``pixperfect evaluate`` writes it: 3 photos x 4 samples; identity
    and reinhard the same in every arm, the refiner ``offset`` dB better than reinhard."""
    rng = random.Random(seed)
    per_sample = []
    for photo in ("kodim01.png", "kodim02.png", "kodim03.png"):
        for i in range(4):
            identity = rng.uniform(20, 40)
            reinhard = identity + rng.uniform(-2, 2)
            scores = {
                name: {"band_psnr": p, "band_ciede2000": 50 / p, "seam_grad": 1 / p}
                for name, p in (
                    ("identity", identity),
                    ("reinhard", reinhard),
                    ("refiner", reinhard + offset + 0.1 * i),
                )
            }
            families = [("colour",), ("texture", "codec"), ("colour", "content")][i % 3]
            per_sample.append(
                {
                    "name": f"{photo}#{i}",
                    "families": list(families),
                    "identity_band_psnr": identity,
                    "scores": scores,
                }
            )
    names = ("identity", "reinhard", "refiner")
    means = {
        n: {
            m: sum(s["scores"][n][m] for s in per_sample) / len(per_sample)
            for m in per_sample[0]["scores"][n]
        }
        for n in names
    }
    comparison = compare_to_identity(
        {n: [s["scores"][n]["band_psnr"] for s in per_sample] for n in names},
        [s["identity_band_psnr"] for s in per_sample],
    )
    for name, scores in comparison["methods"].items():
        means[name].update(scores)
    families = compare_by_family(
        {n: [s["scores"][n]["band_psnr"] for s in per_sample] for n in names},
        [s["identity_band_psnr"] for s in per_sample],
        [s["families"] for s in per_sample],
    )
    return json.loads(
        json.dumps(
            {
                "methods": means,
                "photos": 3,
                "samples": len(per_sample),
                "seed": 2024,
                "band_width": 8,
                "harm_margin_db": 0.5,
                "buckets": comparison["buckets"],
                "families": families,
                "per_sample": per_sample,
            }
        )
    )


def test_report_has_every_arm_and_the_harm_rate(tmp_path):
    arms = list(ablation.ARMS.values())
    results = {"a": fake_results(0.0), "b": fake_results(-0.5), "c": fake_results(0.25)}
    trained = {k: {"steps": 100, "wall_s": 60.0, "resumed": False} for k in results}
    summary = ablation.summarise(results, trained, arms)
    report = ablation.format_report(summary, ["a note"])
    header = report.splitlines()[0]
    assert "harm rate" in header and "band_psnr_gain" in header
    assert "band CIEDE2000" in header and "seam_grad" in header and "band PSNR" in header
    for arm in arms:
        rows = [line for line in report.splitlines() if line.startswith(f"| {arm.label} |")]
        # the main table, both bucket and both family tables; (b) and (c) also against (a)
        assert len(rows) == (5 if arm.key == "a" else 6), arm.label
    assert "LPIPS is off in every arm" in report and "Per-family" not in report
    assert "| family | colour | texture | codec | content |" in report
    assert summary["families"]["samples"] == [9, 3, 3, 3]  # 3 photos x i % 3 over 4 draws
    assert "Identity is the same in every evaluation" in report
    versus = summary["versus_a"]
    assert versus["b"]["mean_db"] == pytest.approx(-0.5)
    assert versus["c"]["mean_db"] == pytest.approx(0.25)
    assert versus["b"]["photos"] == 3 and versus["b"]["better_share"] == 0
    filled = [x for x in versus["c"]["per_bucket_db"] if x is not None]
    assert filled and all(x == pytest.approx(0.25) for x in filled)
    assert [r["row"] for r in summary["rows"][:2]] == ["identity", "reinhard"]
    assert summary["checks"] == {"same_identity": True, "same_samples": True, "same_steps": True}


def test_report_flags_unequal_budgets():
    arms = list(ablation.ARMS.values())
    results = {k: fake_results(0.0) for k in "abc"}
    trained = {k: {"steps": s, "wall_s": 1.0} for k, s in zip("abc", (100, 100, 50), strict=True)}
    report = ablation.format_report(ablation.summarise(results, trained, arms))
    assert "DIFFER between arms" in report


@pytest.mark.slow
def test_script_end_to_end_tiny(tmp_path):
    import numpy as np
    from PIL import Image
    from skimage import data, transform

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "rocket", "coffee"):
        x = transform.resize(getattr(data, name)(), (48, 64), anti_aliasing=True)
        Image.fromarray((x * 255).astype(np.uint8)).save(photos / f"{name}.png")
    tiny = [
        "sim.texture.vae.kind=none",
        "data.crop_size=32",
        "data.val_crop_size=32",
        "data.val_samples_per_image=1",
        "data.batch_size=2",
        "data.num_workers=0",
        "model.base_channels=4",
        "model.ffc_blocks=1",
        "gan.base_channels=8",
        "eval.max_size=64",
        "trainer.accelerator=cpu",
    ]
    out = tmp_path / "ablation"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "ablation_losses.py"),
        "--steps=3",
        f"--out={out}",
        f"--photos={photos}",
        f"--kodak={photos}",
        "--crops-per-image=2",
        "--eval-samples=1",
        *(f"--set={o}" for o in tiny),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "ablation.md").read_text()
    assert "harm rate" in report.splitlines()[0]
    for arm in ablation.ARMS.values():
        assert f"| {arm.label} | 3 |" in report
    assert "by artifact family" in report and "Per-family" not in report
    summary = json.loads((out / "ablation.json").read_text())
    arms = [r for r in summary["rows"] if r["kind"] == "arm"]
    assert [r["arm"] for r in arms] == ["a", "b", "c"]
    assert all("harm_rate" in r["scores"] for r in arms)
    assert summary["checks"]["same_identity"] and summary["checks"]["same_steps"]
    assert set(summary["versus_a"]) == {"b", "c"}
    # rerun: nothing is retrained or re-evaluated
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0
    assert again.stdout.count("not retrained") == 3 and again.stdout.count("reused") == 3
