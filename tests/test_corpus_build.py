"""Shard builds from an image corpus in img2dataset's layout (real photos, JPEG q95), read over
a real HTTP server on 127.0.0.1: split by input shard among array tasks, skipping and
counting bad images, rebuilding one task's or one shard's output alone to the same bytes, a
dry run that opens nothing, and the compact ``source`` format."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import manifest_of
from http_server import ShardServer

from pixperfect.cli import main
from pixperfect.corpus import decode_image
from pixperfect.corpus.synthetic import skimage_photos, write_corpus
from pixperfect.data.sources import describe_sources
from pixperfect.shards.format import decode_sample
from pixperfect.shards.reader import read_all
from pixperfect.shards.tasks import task_from_env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """2 input shards of 6 real photos (scikit-image's, 96 px shorter side, JPEG q95); the
    first holds a truncated JPEG, a 24x16 image and a sample stored as PNG."""
    out = tmp_path_factory.mktemp("corpus")
    write_corpus(out, skimage_photos(), shards=2, per_shard=6, side=96, seed=1,
                 defects=("truncated", "tiny", "png"))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def server(corpus) -> Iterator[ShardServer]:
    srv = ShardServer({"corpus": corpus})
    yield srv
    srv.stop()


def _args(server: ShardServer, out: Path, *more: str) -> list[str]:
    pattern = f"{server.url}/corpus/{{00000..00001}}.tar"
    return [
        "shards", "build", "--images", pattern, "--out", str(out), "--kind", "clean",
        "--size", "64", "--crops-per-image", "2", "--seed", "4", *more,
    ]  # fmt: skip


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.tar")}


@pytest.fixture(scope="module")
def built(server, tmp_path_factory) -> Path:
    """The corpus built by 2 array tasks over HTTP."""
    out = tmp_path_factory.mktemp("built")
    for task in ("0", "1"):
        assert main(_args(server, out, "--num-tasks", "2", "--task-index", task)) == 0
    return out


def test_two_array_tasks_build_from_a_url_skip_and_count_bad_images_and_verify(built, capsys):
    manifest = manifest_of(built)
    # 12 images, 2 skipped (the truncated JPEG, the tiny one), 2 crop rounds each.
    assert manifest["skipped"] == {"too_small": 1, "truncated": 1}
    assert manifest["num_samples"] == 20 and manifest["num_shards"] == 4
    assert sorted(s["name"] for s in manifest["shards"]) == [
        "0000/00000-r0.tar", "0000/00000-r1.tar", "0000/00001-r0.tar", "0000/00001-r1.tar",
    ]  # fmt: skip
    recipe = manifest["recipe"]
    assert recipe["sources"]["input_shards"] == 2 and "00000.tar" not in json.dumps(recipe)
    keys = {s["__key__"] for s in read_all(built)}
    assert "00000_000000002_r0" in keys  # the PNG-keyed sample is read
    assert main(["shards", "verify", str(built), "--workers", "2"]) == 0
    assert "4 shard(s) checked: OK" in capsys.readouterr().out


def test_rerunning_task_1_alone_after_deleting_its_shards_rebuilds_only_those(
    built, server, tmp_path, capsys
):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    before = _tars(out)
    kept = {n: (out / n).stat().st_mtime_ns for n in before if "00000-" in n}
    for path in out.glob("0000/00001-*"):  # task 1 of 2 holds input shard 1
        path.unlink()
    (out / "manifest.json").unlink()
    capsys.readouterr()
    assert main(_args(server, out, "--num-tasks", "2", "--task-index", "1")) == 0
    assert "built 2 shard(s) (12 samples)" in capsys.readouterr().out
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert _tars(out) == before and manifest_of(out) == manifest_of(built)


def test_any_output_shard_rebuilds_alone_to_the_same_bytes(built, server, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    before = _tars(out)
    (out / "0000" / "00000-r1.tar").unlink()
    capsys.readouterr()
    assert main(_args(server, out)) == 0  # one task: every input shard is its own
    assert "built 1 shard(s)" in capsys.readouterr().out
    assert _tars(out) == before


def test_slurm_array_ids_are_the_task_index_when_the_number_of_tasks_is_given(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")  # sbatch --array=3,7 (a rerun)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert task_from_env(None, 16) == (7, 16)
    with pytest.raises(ValueError, match="--task-index 4 is outside 0..1"):
        task_from_env(None, None)  # without T: relative to the first id, as before


def test_an_unreadable_input_shard_fails_its_task_and_a_rerun_finishes(corpus, tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(corpus / "00000.tar", folder / "00000.tar")
    srv = ShardServer({"c": folder})
    try:
        args = [
            "shards", "build", "--images", f"{srv.url}/c/{{00000..00001}}.tar", "--out",
            str(tmp_path / "out"), "--kind", "clean", "--size", "64", "--crops-per-image", "1",
        ]  # fmt: skip
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "00001.tar" in err and "rerun the same command" in err
        assert not (tmp_path / "out" / "manifest.json").exists()
        assert (tmp_path / "out" / "0000" / "00000-r0.json").is_file()
        shutil.copy(corpus / "00001.tar", folder / "00001.tar")  # the server has it again
        assert main(args) == 0
        assert "built 1 shard(s)" in capsys.readouterr().out
    finally:
        srv.stop()


def test_a_dry_run_over_a_hundred_thousand_remote_shards_opens_none_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    from pixperfect.shards import locations

    opened = []

    def refuse(*args, **kwargs):
        opened.append(args[:1])  # recorded too: a reader's error handler may swallow the raise
        raise AssertionError(f"the dry run opened {args[:1]}")

    for scheme in ("http", "https", "pipe", "s3", "file"):  # every opener webdataset has
        monkeypatch.setitem(locations.wds_gopen.gopen_schemes, scheme, refuse)
    monkeypatch.setattr(locations, "open_url", refuse)
    monkeypatch.setattr(locations, "read_bytes", refuse)
    out = tmp_path / "plan"
    pattern = "https://host.invalid/corpus/{00000..99999}.tar"
    args = ["shards", "build", "--images", pattern, "--out", str(out), "--kind", "clean",
            "--size", "512", "--crops-per-image", "4", "--format", "source",
            "--num-tasks", "16", "--task-index", "3", "--dry-run"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "input shards: 100000" in text and "6250 of them" in text
    assert "output shards: 400000" in text and "25000 for this task" in text
    assert "0099/99999-r3.tar" in text and "estimated bytes" in text
    assert not opened and not out.exists() and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    """Real photos as img2dataset stores them: 256 px shorter side, JPEG q95."""
    out = tmp_path_factory.mktemp("jpegs")
    write_corpus(out, skimage_photos(), shards=1, per_shard=6, side=256, seed=2)
    return out


def test_the_source_format_decodes_bit_exact_to_the_source_crop_and_is_smaller(jpegs, tmp_path):
    from pixperfect.corpus.sizes import bytes_per_sample

    out = tmp_path / "source"
    args = ["shards", "build", "--images", str(jpegs / "00000.tar"), "--out", str(out),
            "--kind", "clean", "--size", "256", "--crops-per-image", "2",
            "--format", "source"]  # fmt: skip
    assert main(args) == 0
    with tarfile.open(jpegs / "00000.tar") as tar:
        sources = {
            m.name.split(".")[0]: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.name.endswith(".jpg")
        }
    checked = 0
    for tar_path in sorted(out.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in (n for n in members if n.endswith(".source.jpg")):
            key = name.split(".")[0]
            record = {"__key__": key, "source.jpg": members[name]}
            record["params.json"] = members[f"{key}.params.json"]
            origin = json.loads(record["params.json"])["origin"]
            assert members[name] == sources[origin["key"]]  # the source's own bytes
            pixels = decode_image(sources[origin["key"]])
            t, left, s = origin["top"], origin["left"], origin["size"]
            crop = pixels[t : t + s, left : left + s]
            crop = crop[:, ::-1] if origin["flip"] else crop
            target = decode_sample(record, "clean", as_uint8=True)["target"]
            assert (target.permute(1, 2, 0).numpy() == crop).all()
            checked += 1
    assert checked == 12
    assert main(["shards", "verify", str(out)]) == 0
    sizes = bytes_per_sample(str(jpegs / "00000.tar"), 256, limit=6)
    assert sizes["source"] < min(sizes["png"], sizes["webp"]), sizes


def test_provenance_reads_a_recipe_summary_instead_of_every_path(built):
    photos = {"count": 3, "sha256": "x", "collections": {"kodak": 2, "mine": 1}}
    described = {d["collection"]: d for d in describe_sources(photos)}
    assert described["kodak"]["photos"] == 2 and "Kodak" in described["kodak"]["source"]
    assert described["mine"]["licence"].startswith("unknown")
    [corpus] = describe_sources(manifest_of(built)["recipe"]["sources"])
    assert corpus["input_shards"] == 2 and corpus["collection"].endswith("{00000..00001}.tar")
    paths = ["/p/kodak/a.png", "/p/kodak/b.png"]  # recipes before the summary listed paths
    assert describe_sources(paths)[0]["photos"] == 2


def test_a_txt_listing_tars_is_a_corpus_and_one_listing_photos_stays_a_photo_list(
    jpegs, tmp_path, capsys
):
    tars = tmp_path / "tars.txt"
    tars.write_text(f"# the corpus\n{jpegs / '00000.tar'}\n")
    args = ["shards", "build", "--kind", "clean", "--size", "256", "--crops-per-image", "1"]
    assert main([*args, "--images", str(tars), "--out", str(tmp_path / "a"), "--dry-run"]) == 0
    assert "input shards: 1" in capsys.readouterr().out
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((300, 300, 3), 90, np.uint8))
    photos = tmp_path / "photos.txt"
    photos.write_text(f"{photo}\n")
    assert main([*args, "--images", str(photos), "--out", str(tmp_path / "b"), "--dry-run"]) == 0
    assert "photos: 1" in capsys.readouterr().out


def test_the_avif_format_holds_45_db_at_under_half_the_bytes_of_lossless_webp(jpegs, tmp_path):
    from pixperfect.corpus.sizes import format_costs

    costs = format_costs(str(jpegs / "00000.tar"), 256, formats=("webp", "avif"), limit=6)
    assert costs["avif"]["min_psnr_db"] >= 45.0 and costs["webp"]["min_psnr_db"] == float("inf")
    assert costs["avif"]["bytes"] <= 0.5 * costs["webp"]["bytes"], costs
    out = tmp_path / "avif"
    args = ["shards", "build", "--images", str(jpegs / "00000.tar"), "--out", str(out),
            "--kind", "artifact", "--size", "128", "--crops-per-image", "1",
            "--format", "avif"]  # fmt: skip
    assert main(args) == 0 and main(["shards", "verify", str(out)]) == 0
    [tar_path] = sorted(out.rglob("*.tar"))
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        params = json.loads(tar.extractfile(next(n for n in names if "params" in n)).read())
    assert any(n.endswith(".target.avif") for n in names)
    assert any(n.endswith(".composite.avif") for n in names)
    assert params["encoded"]["target"]["psnr_db"] >= 45.0
