"""The report of benchmarks/ablation_losses.py: pure functions of the arms' evaluation
results (``pixperfect evaluate``'s results.json): the main table of every arm beside the
baselines, the bucket and family tables, and each arm against arm (a) sample by sample.
Tested on fake results in tests/test_ablation.py."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from harness import markdown_table

if TYPE_CHECKING:
    from ablation_losses import Arm

LPIPS_NOTE = (
    "LPIPS is off in every arm (loss.lpips = loss.tone_lpips = 0, evaluation with "
    "--no-perceptual): its backbone weights cannot be had on this machine."
)
FAMILY_NOTE = (
    "Per-family breakdown: not available (an evaluation's results.json holds no artifact "
    "families; rerun it)."
)
# Columns of the main table: (key in the evaluation's means, header, format).
METRICS = (
    ("band_psnr", "band PSNR dB ↑", "{:.2f}"),
    ("band_ciede2000", "band CIEDE2000 ↓", "{:.3f}"),
    ("seam_grad", "seam_grad ↓", "{:.4f}"),
    ("harm_rate", "harm rate % ↓", "{:.1f}"),
    ("band_psnr_gain", "band_psnr_gain dB ↑", "{:+.2f}"),
)


def _cell(scores: dict, key: str, fmt: str) -> str:
    value = scores.get(key)
    return "n/a" if value is None else fmt.format(value)


def _photo(name: str) -> str:
    return name.rsplit("#", 1)[0]


def paired(results: dict, reference: dict, method: str = "refiner") -> dict:
    """``method``'s band PSNR in ``results`` minus in ``reference`` on the same triples:
    mean, +-2 standard errors over the photos (samples of a photo are not independent), the
    share of samples where it is higher, and the mean per identity band-PSNR bucket."""
    ref = {s["name"]: s for s in reference["per_sample"]}
    diffs, by_photo = [], {}
    for s in results["per_sample"]:
        other = ref.get(s["name"])
        if other is None:
            raise ValueError(f"sample {s['name']} is not in the reference evaluation")
        d = s["scores"][method]["band_psnr"] - other["scores"][method]["band_psnr"]
        diffs.append((d, s["identity_band_psnr"]))
        by_photo.setdefault(_photo(s["name"]), []).append(d)
    means = [sum(v) / len(v) for v in by_photo.values()]
    n = len(means)
    mean = sum(d for d, _ in diffs) / max(len(diffs), 1)
    if n > 1:
        m = sum(means) / n
        se = math.sqrt(sum((x - m) ** 2 for x in means) / (n - 1) / n)
    else:
        se = float("nan")
    edges = results["buckets"]["edges_db"]
    buckets: list[list[float]] = [[] for _ in range(len(edges) + 1)]
    for d, identity in diffs:
        buckets[sum(min(identity, 100.0) >= e for e in edges)].append(d)
    return {
        "mean_db": mean,
        "two_se_db": 2 * se,
        "photos": n,
        "better_share": sum(d > 0 for d, _ in diffs) / max(len(diffs), 1),
        "per_bucket_db": [sum(b) / len(b) if b else None for b in buckets],
    }


def summarise(results: dict[str, dict], trained: dict[str, dict], arms: list[Arm]) -> dict:
    """Rows of the main table, the bucket tables and each arm against (a)."""
    first = results[arms[0].key]
    baselines = [m for m in first["methods"] if not m.startswith("refiner")]
    rows = [
        {"row": name, "kind": "baseline", "scores": first["methods"][name]} for name in baselines
    ]
    for arm in arms:
        t = trained[arm.key]
        rows.append(
            {
                "row": arm.label,
                "kind": "arm",
                "arm": arm.key,
                "run": arm.run,
                "steps": t["steps"],
                "wall_min": t["wall_s"] / 60,
                "resumed": t.get("resumed", False),
                "loss": arm.loss,
                "scores": results[arm.key]["methods"]["refiner"],
            }
        )
    b = first["buckets"]
    bucket_rows = [(name, b["methods"][name]) for name in baselines if name in b["methods"]]
    bucket_rows += [(arm.label, results[arm.key]["buckets"]["methods"]["refiner"]) for arm in arms]
    identity = {k: r["methods"].get("identity") for k, r in results.items()}
    same_identity = len({json.dumps(v, sort_keys=True) for v in identity.values()}) == 1
    same_samples = len({r["samples"] for r in results.values()}) == 1
    steps = {trained[a.key]["steps"] for a in arms}
    families = None
    if all(r.get("families") for r in results.values()):
        f = first["families"]
        family_rows = [(n, f["methods"][n]) for n in baselines if n in f["methods"]]
        family_rows += [
            (arm.label, results[arm.key]["families"]["methods"]["refiner"]) for arm in arms
        ]
        families = {
            "labels": f["names"],
            "samples": f["samples"],
            "rows": [
                {"row": name, "gain_db": v["gain_db"], "harm_rate": v["harm_rate"]}
                for name, v in family_rows
            ],
        }
    versus = {}
    if arms[0].key == "a":
        for arm in arms[1:]:
            versus[arm.key] = paired(results[arm.key], results["a"])
    return {
        "rows": rows,
        "buckets": {
            "labels": b["labels"],
            "samples": b["samples"],
            "rows": [
                {"row": name, "gain_db": v["gain_db"], "harm_rate": v["harm_rate"]}
                for name, v in bucket_rows
            ],
        },
        "families": families,
        "versus_a": versus,
        "checks": {
            "same_identity": same_identity,
            "same_samples": same_samples,
            "same_steps": len(steps) == 1,
        },
        "evaluation": {
            "samples": first["samples"],
            "photos": first["photos"],
            "seed": first["seed"],
            "band_width": first["band_width"],
            "harm_margin_db": first.get("harm_margin_db"),
        },
    }


def _bucket_table(
    summary: dict, key: str, fmt: str, title: str, table: str = "buckets", unit: str = " dB"
) -> list[str]:
    b = summary[table]
    cells = [("samples", *b["samples"])]
    for row in b["rows"]:
        cells.append((row["row"], *("-" if v is None else fmt.format(v) for v in row[key])))
    header = [title, *(f"{label}{unit}" for label in b["labels"])]
    return markdown_table(header, cells, align="l" + "r" * len(b["labels"])).splitlines()


def format_report(summary: dict, notes: list[str] = ()) -> str:
    """The markdown report: main table, bucket tables, arms against (a), notes."""
    table_rows = []
    for row in summary["rows"]:
        if row["kind"] == "arm":
            steps = str(row["steps"])
            wall = f"{row['wall_min']:.1f}" + (" (resumed)" if row["resumed"] else "")
        else:
            steps, wall = "-", "-"
        scores = (_cell(row["scores"], k, f) for k, _, f in METRICS)
        table_rows.append((row["row"], steps, wall, *scores))
    header = ["row", "steps", "train min", *(h for _, h, _ in METRICS)]
    lines = markdown_table(header, table_rows, align="l" + "r" * (len(header) - 1)).splitlines()
    lines += ["", "Band-PSNR gain over identity (dB) by identity band PSNR:", ""]
    lines += _bucket_table(summary, "gain_db", "{:+.2f}", "identity band PSNR")
    lines += ["", "Harm rate (%) by identity band PSNR:", ""]
    lines += _bucket_table(summary, "harm_rate", "{:.1f}", "identity band PSNR")
    if summary.get("families"):
        lines += ["", "Band-PSNR gain over identity (dB) by artifact family (a sample with "
                  "several families counts in each; codec: the TAEF2 round trip):", ""]  # fmt: skip
        lines += _bucket_table(summary, "gain_db", "{:+.2f}", "family", "families", "")
        lines += ["", "Harm rate (%) by artifact family:", ""]
        lines += _bucket_table(summary, "harm_rate", "{:.1f}", "family", "families", "")
    if summary["versus_a"]:
        labels = summary["buckets"]["labels"]
        lines += [
            "",
            "Each arm against (a), sample by sample (refiner band PSNR, arm minus (a), dB; "
            "+-2 standard errors over the photos):",
            "",
        ]
        arms = {r["arm"]: r["row"] for r in summary["rows"] if r["kind"] == "arm"}
        versus = [
            (arms.get(key, key), f"{v['mean_db']:+.2f}", f"{v['two_se_db']:.2f}",
             f"{100 * v['better_share']:.0f}%",
             *("-" if x is None else f"{x:+.2f}" for x in v["per_bucket_db"]))
            for key, v in summary["versus_a"].items()
        ]  # fmt: skip
        header = ["arm", "mean", "+-2 SE", "better on", *(f"{label} dB" for label in labels)]
        lines += markdown_table(header, versus, align="l" + "r" * (len(header) - 1)).splitlines()
    checks = summary["checks"]
    e = summary["evaluation"]
    lines += [
        "",
        f"Evaluation: {e['samples']} samples from {e['photos']} photos (seed {e['seed']}, "
        f"band {e['band_width']} px, refiner = EMA weights, harm = more than "
        f"{e['harm_margin_db']} dB below identity). Identity "
        + ("is the same in every evaluation" if checks["same_identity"] else "DIFFERS!")
        + "; steps "
        + ("are the same in every arm." if checks["same_steps"] else "DIFFER between arms!"),
        LPIPS_NOTE,
        *([] if summary.get("families") else [FAMILY_NOTE]),
        *notes,
    ]
    return "\n".join(lines)
