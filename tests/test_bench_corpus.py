"""benchmarks/bench_corpus.py runs end to end at a small size and prints its three tables:
a row per route and loader-worker count, the dry-run over 10^5 input shards, and a row per
shard format with the compact one under half the lossless bytes at >= 45 dB (the timings
themselves are the benchmark's, not a test's)."""

from __future__ import annotations

import re
import subprocess
import sys

from assets import SHARED, require
from conftest import ROOT


def test_the_corpus_benchmark_prints_every_route_the_dry_run_and_every_format():
    photos = require(SHARED / "data" / "photos" / "train" / "cbsd68")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_corpus.py"), "--photos", str(photos)]
        + ["--n-photos", "6", "--shards", "2", "--per-shard", "3", "--size", "128"]
        + ["--batch", "2", "--read-batches", "2", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    out = result.stdout
    for route in ("corpus route", "clean shards", "loose JPEG folder"):
        assert len(re.findall(rf"^{route}.*\s[0-2]\s+[\d.]+\s+[\d.]+$", out, re.M)) == 3, out
    assert re.search(r"^shards build --dry-run \(CLI\)\s+100,000\s+[\d.]+\s+\d+$", out, re.M), out
    rows = {
        m[0]: m
        for m in re.findall(r"^(png|webp|source|avif)\s+([\d,]+)\s+([\d.]+)\s+(\S+)", out, re.M)
    }
    assert set(rows) == {"png", "webp", "source", "avif"}, out
    assert float(rows["avif"][2]) <= 0.5 and float(rows["avif"][3]) >= 45.0, out
    assert rows["webp"][3] == "exact" and rows["source"][3] == "exact", out
