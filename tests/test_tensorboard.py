"""What a training run shows in TensorBoard, checked through a real TensorBoard server's HTTP
API (the one its web page reads): a tiny adversarial run with one validation, then
``python -m tensorboard.main --logdir <runs> --host 127.0.0.1`` on a free port.

The tags are listed in docs/training.md ("TensorBoard"); the writing is in
src/pixperfect/training/module.py (scalars, images) and training/tensorboard.py (config
text, hparams, custom-scalars layout)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, TINY
from helpers import free_port

from pixperfect.config import load_config
from pixperfect.metrics import METRIC_NAMES
from pixperfect.training.train import train

RUN = "demo/tb"  # the run TensorBoard names: <run.name>/tb under the logdir

EXPECTED_SCALARS = {
    # the generator (train/*): the weighted sum, each active term, the skip counter
    "train/loss",
    "train/mse",
    "train/adversarial",
    "train/skipped_steps",
    # the discriminator (d/*)
    "d/loss",
    "d/logits_real",
    "d/logits_fake",
    "d/logits_fake_g",
    "d/r1",
    # optimisation
    "grad_norm/generator",
    "grad_norm/discriminator",
    "lr/generator",
    "lr/discriminator",
    # throughput over every rank and step of the log window (training/monitor.py), and
    # memory (memory/peak_gib and peak_reserved_gib: CUDA only)
    *(
        f"time/{name}_{stat}"
        for name in ("step_s", "data_s", "data_wait_share", "simulation_s", "presync_s")
        for stat in ("mean", "max", "p95")
    ),
    "time/slowest_rank",
    "time/slowest_rank_lag_s",
    "time/images_per_s",
    "time/images_per_s_total",
    "time/mfu",  # the run gives trainer.peak_tflops
    "memory/host_peak_rss_gib",
    # validation
    *(f"val/{name}" for name in METRIC_NAMES),
    # diagnostics: the prior gate, the correction, the gradient per level and per path
    *(f"diag/gate_open_{region}" for region in ("inside", "band", "outside")),
    *(f"diag/correction_{s}_{r}" for s in ("mean", "max") for r in ("inside", "band", "outside")),
    "diag/grad_body_via_head",
    "diag/grad_body_via_gate",
    *(f"grad/{level}" for level in ("stem", "down.0", "down.1", "fuse.0", "fuse.1", "head")),
    "grad/gate",
    "grad/context",
    "grad/head_over_deepest",
    "grad/levels_below_adam_eps",
}
CATEGORIES = [
    "Generator losses",
    "Discriminator",
    "Validation (EMA weights, held-out photos)",
    "Optimisation",
    "Throughput",
    "Memory",
    "Diagnostics",
]


class TensorBoard:
    """A TensorBoard server on 127.0.0.1 and a client for its JSON routes."""

    def __init__(self, logdir: Path) -> None:
        self.base = f"http://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
        command += ["--host", "127.0.0.1", "--port", self.base.rsplit(":", 1)[1]]
        command += ["--reload_interval", "0"]  # the run is complete: load it once
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def get(self, route: str, body: dict | None = None, **query: str):
        url = self.base + route + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, run: str, timeout_s: float = 30.0) -> None:
        """Until the server answers and has loaded ``run``'s scalars."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[0].decode()
            try:
                if self.get("/data/plugin/scalars/tags").get(run):
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        raise TimeoutError(f"TensorBoard did not serve {run} within {timeout_s} s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
    """A tiny run with the adversarial term from step 0 (so D, its logits and R1 are logged)
    and one validation, served by TensorBoard."""
    root = tmp_path_factory.mktemp("runs")
    overrides = [
        *TINY,
        f"run.root={root}",
        "loss.adversarial=1.0",
        "gan.warmup_steps=0",
        "gan.base_channels=8",
        "gan.n_down=2",
        "gan.r1_every=2",
        "trainer.max_steps=3",
        "trainer.val_every_n_steps=3",
        "trainer.peak_tflops=1.0",  # time/mfu on the CPU
    ]
    train(load_config(ROOT / "configs" / "demo.yaml", overrides))
    server = TensorBoard(root)
    try:
        server.wait_for(RUN)
        yield server
    finally:
        server.close()


def test_the_scalars_are_grouped_g_d_val_optimisation_throughput_memory(tensorboard):
    tags = set(tensorboard.get("/data/plugin/scalars/tags")[RUN])
    assert not EXPECTED_SCALARS - tags, sorted(EXPECTED_SCALARS - tags)
    assert "hp_metric" not in tags  # Lightning's placeholder: the hparams tab has real metrics
    assert "lr-Adam" not in tags  # lr/generator instead

    def values(tag: str) -> list[float]:
        rows = tensorboard.get("/data/plugin/scalars/scalars", run=RUN, tag=tag)
        return [value for _, _, value in rows]

    assert values("lr/generator") == [pytest.approx(5e-4)] * 3  # configs/demo.yaml optim.lr
    assert values("lr/discriminator") == [pytest.approx(5e-4)] * 3  # the default gan.lr
    for tag in ("grad_norm/generator", "grad_norm/discriminator"):
        assert all(math.isfinite(v) and v > 0 for v in values(tag)), tag
    shares = values("time/data_wait_share_max")  # from the second step on
    assert len(shares) == 2 and all(0 <= v < 1 for v in shares), shares
    assert values("time/slowest_rank") == [0.0] * 3  # one process
    mfu, rate = values("time/mfu"), values("time/images_per_s")
    assert len(mfu) == 3 and all(0 < m < 1 for m in mfu) and all(r > 0 for r in rate)


def test_the_diagnostics_show_an_open_gate_a_small_correction_and_every_level_learning(
    tensorboard,
):
    tags = tensorboard.get("/data/plugin/scalars/tags")[RUN]

    def values(tag: str) -> list[float]:
        return [v for _, _, v in tensorboard.get("/data/plugin/scalars/scalars", run=RUN, tag=tag)]

    # configs/demo.yaml's seam-affine prior starts behind a gate open at sigmoid(3) = 0.953.
    for region in ("inside", "band", "outside"):
        assert values(f"diag/gate_open_{region}") == [pytest.approx(0.953, abs=0.01)] * 3
    # The near-zero head: a correction of a few 8-bit levels at most.
    assert all(0 < v < 20 for v in values("diag/correction_max_band"))
    # Every level of the demo's U-Net (stem, down.0-1, fuse.0-1, head, gate, global branch).
    levels = {t for t in tags if t.startswith("grad/")}
    levels -= {"grad/head_over_deepest", "grad/levels_below_adam_eps"}
    assert len(levels) == 8, sorted(levels)
    for tag in levels:
        assert all(math.isfinite(v) and v > 0 for v in values(tag)), tag
    assert all(v > 1 for v in values("grad/head_over_deepest"))
    family = [t for t in tags if t.startswith("val_family/") and t.endswith("/band_psnr")]
    assert family and all(10 < values(t)[0] < 80 for t in family), family
    assert any(t.startswith("train_family/") for t in tags)


def test_the_custom_scalars_layout_has_the_seven_groups_and_charts_with_data(tensorboard):
    layout = tensorboard.get("/data/plugin/custom_scalars/layout")
    categories = {c["title"]: c["chart"] for c in layout["category"]}
    assert list(categories) == CATEGORIES
    tags = tensorboard.get("/data/plugin/scalars/tags")[RUN]
    empty = []
    for charts in categories.values():
        for chart in charts:
            (pattern,) = chart["multiline"]["tag"]
            if not any(re.search(pattern, tag) for tag in tags):
                empty.append(pattern)
    # This run has no tone-space terms, no LPIPS and no shards or corpus: only those charts
    # are empty.
    assert empty == ["^train/tone_", "^val/lpips$", "^data/(corrupt_skipped|skipped_\\w+)$"], empty


def test_the_hparams_tab_has_the_config_and_the_final_validation_scores(tensorboard):
    experiment = tensorboard.get("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"run.name", "optim.lr", "loss.adversarial", "model.base_channels"} <= hparams
    assert {"sim.colour.p", "data.crop_size", "gan.r1_every", "trainer.max_steps"} <= hparams
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[0] == "val/band_psnr" and "train/loss" in metrics, metrics

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 10,
    }
    groups = tensorboard.get("/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert [g["name"] for g in groups] == [RUN]
    (session,) = groups[0]["sessions"]
    assert groups[0]["hparams"]["loss.adversarial"] == 1.0
    assert groups[0]["hparams"]["data.holdout"] == "[chelsea, coffee]"
    scores = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
    assert 10 < scores["val/band_psnr"] < 80, scores  # a real score, not a placeholder
    assert set(scores) == set(metrics), scores


def test_the_config_is_a_text_and_the_image_grids_are_there(tensorboard):
    assert tensorboard.get("/data/plugin/text/tags")[RUN] == ["config/text_summary"]
    (entry,) = tensorboard.get("/data/plugin/text/text", run=RUN, tag="config/text_summary")
    assert "r1_every: 2" in entry["text"] and "adversarial: 1.0" in entry["text"]
    images = tensorboard.get("/data/plugin/images/tags")[RUN]
    assert {"train/images", "val/images"} <= set(images)
