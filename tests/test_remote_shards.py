"""Shards read from URLs: a real HTTP server on 127.0.0.1 (which also breaks transfers and
goes away on request), pipe: commands, s3:// through a stand-in ``aws`` command, and shard
patterns without a manifest."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from assets import SHARED, require
from helpers import free_port
from http_server import ShardServer
from torch.utils.data import DataLoader

from pixperfect.cli import main
from pixperfect.shards.build import BuildSpec, build
from pixperfect.shards.locations import OPEN_RETRIES, HttpReader, _retry_wait, require_counts
from pixperfect.shards.reader import (
    MAX_FAILED_READS,
    ReadProgress,
    ShardReadError,
    SkipCounter,
    check_enough_shards,
    preview,
    read_all,
    read_manifest,
    training_stream,
)
from pixperfect.shards.verify import verify

TRAIN = SHARED / "data" / "photos" / "train" / "cbsd68"
PATTERN = "shard-{000000..000004}.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """5 photos x 2 crops of 32 px, 2 samples per shard: 5 artifact shards."""
    photos = [str(p) for p in sorted(require(TRAIN).glob("*.png"))[:5]]
    out = tmp_path_factory.mktemp("shards")
    spec = BuildSpec(sources=photos, size=32, crops_per_image=2, shard_size=2, seed=5)
    build(spec, out, progress=False)
    return out


@pytest.fixture(scope="module")
def bare(shards, tmp_path_factory) -> Path:
    """The same shards with no manifest beside them."""
    out = tmp_path_factory.mktemp("bare")
    for tar in shards.glob("*.tar"):
        shutil.copy(tar, out)
    return out


@pytest.fixture
def server(shards, bare, tmp_path) -> Iterator[ShardServer]:
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    tar = bad / "shard-000002.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, another sha256
    tar.write_bytes(bytes(data))
    srv = ShardServer({"shards": shards, "bare": bare, "bad": bad})
    yield srv
    srv.stop()


class Hung(BaseException):
    """Not an Exception: webdataset's error handlers must not swallow it."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(*_):
        raise Hung(f"still running after {seconds} s: it would hang")

    previous = signal.signal(signal.SIGALRM, expire)
    # then every 0.5 s: a raise inside a __del__ (closing a stream) is ignored by Python
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _targets(location, workers: int = 0, **kw) -> list[bytes]:
    kw = {"resample": False, "shuffle_buffer": 0, "batch_size": 2, **kw}
    stream = training_stream(location, kw.pop("batch_size"), workers=workers, **kw)
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [t.numpy().tobytes() for b in loader for t in b["target"]]


def test_a_manifest_url_streams_the_same_samples_as_the_local_folder(shards, server):
    url = f"{server.url}/shards/manifest.json"
    manifest = read_manifest(url)
    assert manifest["urls"][0] == f"{server.url}/shards/shard-000000.tar"
    assert manifest["num_samples"] == 10
    local = _targets(shards)
    assert len(local) == 10
    assert _targets(url) == local
    assert _targets(f"{server.url}/shards/", workers=2) == _targets(shards, workers=2)


def test_dataloader_workers_started_by_spawn_open_urls_with_the_bounded_opener(shards, server):
    stream = training_stream(
        f"{server.url}/shards/manifest.json", 2, workers=2, resample=False, shuffle_buffer=0
    )
    loader = DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    got = [t.numpy().tobytes() for b in loader for t in b["target"]]
    assert got == _targets(shards, workers=2)
    assert server.agents == {f"Python-urllib/{sys.version_info[0]}.{sys.version_info[1]}"}


def test_a_brace_pattern_url_without_manifest_resamples_and_infers_the_kind(shards, server):
    pattern = f"{server.url}/bare/{PATTERN}"
    manifest = read_manifest(pattern)
    assert manifest["kind"] == "artifact" and manifest["size"] == 32
    assert manifest["num_shards"] == 5 and manifest["num_samples"] is None
    batches = list(training_stream(pattern, 2, epoch_samples=8, shuffle_buffer=4))
    assert len(batches) == 4 and batches[0]["composite"].shape == (2, 3, 32, 32)
    every = set(_targets(shards))
    assert {t.numpy().tobytes() for b in batches for t in b["target"]} <= every


def test_a_pattern_with_a_manifest_beside_it_has_counts(shards, server):
    manifest = read_manifest(f"{server.url}/shards/shard-{{000001..000002}}.tar")
    assert manifest["num_samples"] == 4 and len(manifest["shards"]) == 2
    assert manifest["urls"][0].endswith("/shards/shard-000001.tar")


def test_pipe_and_file_urls_serve_patterns_and_manifests(shards, bare, tmp_path):
    pattern = f"pipe:cat {bare}/{PATTERN}"
    assert read_manifest(pattern)["kind"] == "artifact"
    assert len(_targets(pattern, resample=True, epoch_samples=10)) == 10
    absolute = (shards / "manifest.json").read_text().replace('"shard-', f'"{shards}/shard-')
    (tmp_path / "manifest.json").write_text(absolute)
    assert _targets(f"pipe:cat {tmp_path}/manifest.json") == _targets(shards)
    with pytest.raises(ValueError, match="relative shard names"):
        read_manifest(f"pipe:cat {shards}/manifest.json")
    assert _targets(f"file://{shards}/manifest.json") == _targets(shards)


def test_s3_urls_are_read_with_the_aws_command(shards, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "aws"  # `aws s3 cp --quiet s3://bucket/KEY -`
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nexec cat "{shards}/${{4#s3://bucket/}}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    samples = read_all("s3://bucket/manifest.json")
    assert len(samples) == 10
    local = read_all(shards)
    assert all((s["target"] == t["target"]).all() for s, t in zip(samples, local, strict=True))


def test_read_all_preview_and_the_shard_check_work_on_a_manifest_url(shards, server):
    url = f"{server.url}/shards/manifest.json"
    assert len(read_all(url)) == 10
    batch, captions = preview(url, n=3)
    assert batch["composite"].shape == (3, 3, 32, 32) and len(captions) == 3
    assert check_enough_shards(url, workers=2, world_size=2)["num_shards"] == 5
    with pytest.raises(ValueError, match="5 shard"):
        check_enough_shards(url, workers=3, world_size=2)


def test_without_resampling_a_bare_pattern_is_refused_naming_data_shards_and_the_manifest(
    server,
):
    pattern = f"{server.url}/bare/{PATTERN}"
    with pytest.raises(ValueError, match=r"data\.shards=.*manifest"):
        require_counts(read_manifest(pattern), "data.resample=false")
    with pytest.raises(ValueError, match=r"data\.shards=.*manifest"):
        training_stream(pattern, 2, resample=False)


def test_a_404_a_refused_connection_and_a_silent_server_are_errors_in_bounded_time(
    server, monkeypatch
):
    monkeypatch.setenv("PIXPERFECT_READ_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="404"):
        read_manifest(f"{server.url}/nothing/manifest.json")
    with pytest.raises(OSError, match="no readable sample"):
        read_manifest(f"{server.url}/bare/shard-{{000007..000009}}.tar")
    with pytest.raises(OSError, match="refused"):
        read_manifest(f"http://127.0.0.1:{free_port()}/shards/manifest.json")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(OSError, match="timed out"):
            read_manifest(f"http://127.0.0.1:{silent.getsockname()[1]}/manifest.json")
    with pytest.raises(OSError, match="no output for 1 s"):
        read_manifest("pipe:sleep 30; cat manifest.json")
    assert time.monotonic() - start < 20


def test_a_busy_server_is_asked_again_and_no_sample_is_lost(shards, server):
    server.busy["shard-000001.tar"] = OPEN_RETRIES  # 503 on every try but the last
    assert _targets(f"{server.url}/shards/manifest.json") == _targets(shards)
    assert server.busy["shard-000001.tar"] == 0


def test_a_server_busy_for_good_is_an_error_naming_the_url_after_its_retries(server):
    url = f"{server.url}/shards/shard-000001.tar"
    server.busy["shard-000001.tar"] = 100
    message = rf"{re.escape(url)}: HTTP 503 Slow Down \({OPEN_RETRIES + 1} tries\)"
    with deadline(30), pytest.raises(OSError, match=message):
        HttpReader(url)
    assert server.busy["shard-000001.tar"] == 100 - (OPEN_RETRIES + 1)
    with pytest.raises(FileNotFoundError, match="HTTP 404"):  # not a "try again": no retry
        HttpReader(f"{server.url}/shards/missing.tar")


def test_retries_wait_longer_each_time_or_as_the_server_asks_within_a_cap():
    assert [_retry_wait(a, None) for a in range(3)] == [1.0, 2.0, 4.0]
    assert _retry_wait(0, "7") == 7.0 and _retry_wait(0, "3600") == 30.0
    assert _retry_wait(9, None) == 30.0
    assert _retry_wait(1, "Wed, 21 Oct 2026 07:28:00 GMT") == 2.0  # a date: our own wait


def test_a_transfer_cut_half_way_is_skipped_and_counted_and_reading_goes_on(shards, server):
    server.cut_once.add("shard-000001.tar")
    stream = training_stream(
        f"{server.url}/shards/manifest.json", 1, resample=False, shuffle_buffer=0
    )
    with deadline(60):
        batches = list(DataLoader(stream, batch_size=None))
    assert len(batches) == 10  # the full epoch: the slot read its share again
    assert int(batches[-1]["corrupt_skipped"]) >= 1
    assert {b["target"].numpy().tobytes() for b in batches} <= set(_targets(shards))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_server_gone_for_good_mid_read_stops_the_stream_with_a_clear_error(server, workers):
    server.die_on_tar = 2
    stream = training_stream(
        f"{server.url}/shards/manifest.json", 1, workers=workers, epoch_samples=10**6
    )
    start = time.monotonic()
    with deadline(60), pytest.raises(ShardReadError) as error:
        for _ in DataLoader(stream, batch_size=None, num_workers=workers):
            pass
    assert time.monotonic() - start < 60
    message = str(error.value)
    assert f"{MAX_FAILED_READS} shard reads in a row failed" in message, message
    assert f"{server.url}/shards/shard-" in message and "reachable" in message


def test_verify_passes_a_manifest_url_and_names_a_shard_served_with_other_bytes(
    shards, server, capsys
):
    report = verify(f"{server.url}/shards/manifest.json", progress=False)
    assert report.ok, report.format()
    assert sum(s.decoded for s in report.shards) == 10
    bad = verify(f"{server.url}/bad/manifest.json", progress=False)
    problems = {s.name: s.problems for s in bad.shards if s.problems}
    assert list(problems) == ["shard-000002.tar"]
    assert "sha256 differs from the manifest" in problems["shard-000002.tar"]
    assert main(["shards", "verify", f"{server.url}/bad/manifest.json"]) == 1
    assert "shard-000002.tar" in capsys.readouterr().out


def test_verify_of_a_bare_pattern_decodes_and_counts_and_says_checksums_were_not_checked(
    server, capsys
):
    report = verify(f"{server.url}/bare/{PATTERN}", progress=False)
    assert report.ok and [s.found for s in report.shards] == [2] * 5
    assert sum(s.decoded for s in report.shards) == 10
    assert "checksums" in report.format() and "not checked" in report.format()
    missing = verify(f"{server.url}/bare/shard-{{000004..000005}}.tar", progress=False)
    assert not missing.ok and "404" in missing.format()


def test_failed_reads_stop_a_watched_stream_after_a_count_or_a_time_and_a_sample_resets():
    unwatched = SkipCounter(limit=2)
    for _ in range(5):
        assert unwatched(OSError("gone", "http://x/shard-000000.tar"))  # counted only
    counter = SkipCounter(limit=3, seconds=0.2)
    progress = ReadProgress(counter)
    assert counter(OSError("gone")) and counter(OSError("gone"))
    assert list(progress(iter([{"__key__": "a"}]))) == [{"__key__": "a"}]  # resets
    assert counter(OSError("gone")) and counter(OSError("gone"))
    with pytest.raises(ShardReadError, match="3 shard reads in a row failed"):
        counter(OSError("gone", "http://x/shard-000001.tar"))
    slow = SkipCounter(limit=1000, seconds=0.2)
    ReadProgress(slow)
    slow(OSError("timed out"))
    time.sleep(0.25)
    with pytest.raises(ShardReadError, match=r"http://x/shard-000002\.tar: timed out"):
        slow(OSError("timed out", "http://x/shard-000002.tar"))
