"""Shards that match the run (docs/shards.md, "Shards that match the run"): ``pixperfect train``
refuses shards whose recipe contradicts the config before the first step, naming both values and
the override; checkpoints and exports record the data's location and recipe hash."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY

from data_sim import SIM_VERSION
from pixperfect.cli import main
from pixperfect.preflight import Report, _check_data
from pixperfect.shards.build import BuildSpec, build
from pixperfect.shards.locations import resolve
from pixperfect.shards.match import (
    ShardMismatch,
    compare,
    data_provenance,
    readable_format_versions,
    validation_statement,
)

PHOTOS = ["skimage:astronaut", "skimage:rocket"]
# configs/demo.yaml's training mix; shards built with sim={} carry the defaults (no mix)
DEFAULT_MIX = ["sim.mix.nearly_right_p=0.0", "sim.mix.clean_p=0.0"]


def _build(out: Path, **kw) -> Path:
    args = dict(sources=PHOTOS, size=32, crops_per_image=2, shard_size=1, seed=7)
    build(BuildSpec(**{**args, **kw}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def artifact_shards(tmp_path_factory) -> Path:
    """4 artifact shards of one 32 px sample, the default sim recipe."""
    return _build(tmp_path_factory.mktemp("artifact") / "shards")


@pytest.fixture(scope="module")
def clean_48(tmp_path_factory) -> Path:
    """4 clean shards of 48 px: another crop size than the tiny config's 32."""
    return _build(tmp_path_factory.mktemp("clean48") / "shards", kind="clean", size=48)


def _edit_manifest(src: Path, out: Path, **recipe) -> Path:
    shutil.copytree(src, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["recipe"].update(recipe)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_train_on_shards_of_another_crop_size_stops_before_the_first_step_naming_both(
    clean_48, tmp_path, capsys
):
    args = ["train", "--config", str(ROOT / "configs" / "demo.yaml"), *TINY]
    args += [f"run.root={tmp_path}", "run.name=r", "data.source=shards", f"data.shards={clean_48}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "crop size: shards 48 px, config data.crop_size=32" in err, err
    assert "fix: data.crop_size=48" in err
    assert not (tmp_path / "r").exists(), "refused before the run directory, let alone a step"


def test_train_on_shards_of_another_simulator_version_stops_before_the_first_step(
    artifact_shards, tmp_path, tiny_config
):
    from pixperfect.training.run_folder import run_dir
    from pixperfect.training.train import train

    old = _edit_manifest(artifact_shards, tmp_path / "old", sim_version=SIM_VERSION - 1)
    cfg = tiny_config("data.source=shards", f"data.shards={old}", *DEFAULT_MIX)
    with pytest.raises(ShardMismatch) as refused:
        train(cfg)
    message = str(refused.value)
    assert f"simulator version (data_sim.SIM_VERSION): shards {SIM_VERSION - 1}, config " in (
        message
    )
    assert f"config {SIM_VERSION}; fix: rebuild the shards" in message
    assert not run_dir(cfg).exists()
    report = Report("preflight")  # preflight names the same contradiction
    _check_data(cfg, 1, report)
    assert any("simulator version" in what for what, _ in report.problems), report.format()


def test_artifact_shards_of_another_recipe_are_refused_naming_each_key_and_its_override(
    artifact_shards, tiny_config
):
    from pixperfect.training.train import train

    cfg = tiny_config("data.source=shards", f"data.shards={artifact_shards}")
    with pytest.raises(ShardMismatch) as refused:
        train(cfg)  # demo.yaml's training mix; the shards carry the default (none)
    message = str(refused.value)
    assert "artifact recipe sim.mix.clean_p: shards 0.0, config 0.05" in message, message
    assert "fix: sim.mix.clean_p=0.0, or rebuild the shards" in message
    assert "sim.mix.nearly_right_p=0.0" in message


def test_a_shard_format_this_reader_does_not_know_is_refused_and_the_builders_is_known(
    artifact_shards, tmp_path, tiny_config
):
    manifest = resolve(artifact_shards)
    assert manifest["recipe"]["format_version"] in readable_format_versions()
    future = resolve(_edit_manifest(artifact_shards, tmp_path / "f", format_version=99))
    cfg = tiny_config(*DEFAULT_MIX)
    match = compare(future, cfg)
    assert [c.what for c in match.contradictions] == ["shard format version"]
    assert "shard format version: shards 99, config 1" in str(match.contradictions[0])
    assert "(what this pixperfect reads)" in str(match.contradictions[0])


def test_matching_shards_train_and_the_checkpoint_and_export_record_their_recipe_and_location(
    artifact_shards, tmp_path, tiny_config, caplog
):
    from pixperfect.release import export_checkpoint
    from pixperfect.training.train import train

    manifest = json.loads((artifact_shards / "manifest.json").read_text())
    cfg = tiny_config("data.source=shards", f"data.shards={artifact_shards}", *DEFAULT_MIX)
    with caplog.at_level("INFO", logger="pixperfect.shards.match"):
        ckpt = train(cfg) / "checkpoints" / "last.ckpt"
    assert "is the training shards' recipe (checked" in caplog.text, "validation says its recipe"
    data = torch.load(ckpt, map_location="cpu", weights_only=False)["data_provenance"]
    assert data["recipe_hash"] == manifest["recipe_hash"]
    assert data["location"] == str((artifact_shards / "manifest.json").absolute())
    assert data["remote"] is False and data["kind"] == "artifact"
    assert data["sim_version"] == SIM_VERSION and data["num_samples"] == 4
    out = export_checkpoint(ckpt, tmp_path / "export")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["data"] == data
    assert provenance["recipe"]["shards_recipe_hash"] == manifest["recipe_hash"]
    card = (out / "README.md").read_text()
    assert manifest["recipe_hash"] in card and data["location"] in card


def test_remote_shards_are_recorded_as_remote_with_their_url(artifact_shards, tiny_config):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(artifact_shards)
    )
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/manifest.json"
        cfg = tiny_config("data.source=shards", f"data.shards={url}", *DEFAULT_MIX)
        manifest = resolve(url)
        assert compare(manifest, cfg).ok
        data = data_provenance(cfg, manifest)
    finally:
        server.shutdown()
        server.server_close()
    assert data["location"] == url and data["remote"] is True
    assert data["recipe_hash"] == manifest["recipe_hash"]


def test_a_pattern_without_manifest_has_its_size_checked_and_the_rest_said_unchecked(
    clean_48, tmp_path, tiny_config
):
    bare = tmp_path / "bare"
    shutil.copytree(clean_48, bare)
    (bare / "manifest.json").unlink()
    manifest = resolve(f"{bare}/shard-{{000000..000003}}.tar")
    other = compare(manifest, tiny_config())
    assert "crop size: shards 48 px, config data.crop_size=32" in str(other.contradictions[0])
    same = compare(manifest, tiny_config("data.crop_size=48"))
    assert same.ok and "simulator version" in same.unchecked[0]


def test_validation_shards_must_carry_artifacts_and_may_follow_their_own_recipe(
    artifact_shards, clean_48, tiny_config
):
    clean = compare(resolve(clean_48), tiny_config("data.val_crop_size=48"), "validation")
    assert [c.what for c in clean.contradictions] == ["kind"]
    own = compare(resolve(artifact_shards), tiny_config(), "validation")  # demo mix differs
    assert own.ok and "sim.mix.clean_p" in own.notes[0]


def test_validation_says_when_it_cannot_use_the_training_shards_recipe(tiny_config):
    cfg = tiny_config("data.source=shards", "data.shards=x")
    pattern = {"kind": "artifact", "size": 32, "location": "https://h/s-{0..3}.tar"}
    assert "NOT necessarily the training shards' recipe" in validation_statement(
        cfg, compare(pattern, cfg), pattern
    )


def test_a_corpus_run_records_its_pattern_as_the_data_location(tiny_config):
    pattern = "https://host/corpus/{00000..00009}.tar"
    data = data_provenance(tiny_config("data.source=corpus", f"data.corpus={pattern}"))
    assert data["kind"] == "corpus" and data["location"] == pattern and data["remote"]
