"""The reports of ``pixperfect evaluate``: its results (the JSON ``evaluate`` returns) as a
fixed-width table for the terminal, markdown and CSV tables, and the files written next to
``--out results.json``. Nothing here scores; everything reads the results dict."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pixperfect.evaluation.breakdown import (
    HARM_MARGIN_DB,
    buckets_legend,
    format_buckets,
    format_families,
)
from pixperfect.evaluation.perceptual import HIGHER_IS_BETTER as PERCEPTUAL_HIGHER
from pixperfect.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from pixperfect.texture_gap import GUARD_PX, TEXTURE_METRICS

FAMILIES_LEGEND = (
    "mean band-PSNR gain over identity (dB) on the samples with each artifact family "
    "(a sample with several counts in each; codec: the latent round trip of texture)"
)
# Against identity, sample by sample (pixperfect.evaluation.breakdown); not for identity.
COMPARISON_METRICS = ("band_psnr_gain", "harm_rate")
WHOLE_IMAGE_METRICS = ("psnr", "ssim", "l1")
BAND_METRICS = (
    *(m for m in METRIC_NAMES if m not in WHOLE_IMAGE_METRICS),
    *TEXTURE_METRICS,
    *COMPARISON_METRICS,
)
DIRECTION = {
    **HIGHER_IS_BETTER,
    **PERCEPTUAL_HIGHER,
    "texture_gap": False,
    "texture_gap_closed": True,
    "band_psnr_gain": True,
    "harm_rate": False,
}


def _metrics(results: dict) -> list[str]:
    return list(results.get("metrics", METRIC_NAMES))


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "band_psnr_gain":
        return f"{value:+.2f}"
    if metric == "harm_rate":
        return f"{value:.1f}%"
    if metric == "texture_gap_closed":
        return f"{value:+.1f}%"
    if metric == "texture_gap":
        return f"{value:.2f}"
    if "psnr" in metric or metric in ("fid", "u_ids", "p_ids"):
        return f"{value:.2f}"
    if "ciede" in metric:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _legend(results: dict) -> str:
    source = results.get("dataset", {})
    what = (
        f"{results['samples']} triples from {source.get('path')}"
        if source.get("kind") == "triples"
        else f"{results['samples']} samples from {results['photos']} held-out photos"
    )
    legend = (
        f"{what}; band metrics (band_*, seam_grad) are measured within "
        f"{results['band_width']} px of the mask boundary, either side, the others on the "
        "whole image; inner_band_* / outer_band_*: the band's half inside / outside the mask "
        "(the edit's rim / the photo around it); ↑ higher is better, ↓ lower is better; PSNR "
        "in dB, CIEDE2000 in ΔE00 units, seam_grad = RMS gradient of (output - target) in "
        "the band; U-IDS / P-IDS x100"
    )
    if "texture_gap" in _metrics(results):
        scored = results.get("texture_gap_samples", results["samples"])
        legend += (
            "; texture_gap = |(inner / outer high-frequency energy, dB) of the output - the "
            "same of the target|, in rings of the band width just inside / outside the mask "
            f"from {GUARD_PX} px off its boundary (on the {scored} of {results['samples']} "
            "samples whose mask leaves both rings); texture_gap_closed = % of identity's mean "
            "texture gap closed"
        )
    if "harm_rate" in _metrics(results):
        margin = results.get("harm_margin_db", HARM_MARGIN_DB)
        legend += (
            "; band_psnr_gain = mean band-PSNR gain over identity, sample by sample; "
            f"harm_rate = % of samples whose band PSNR is more than {margin:g} dB below "
            "identity's"
        )
    return legend


def _arrow(results: dict, metric: str) -> str:
    higher = results.get("higher_is_better", DIRECTION).get(metric, DIRECTION.get(metric))
    return "↑" if higher else "↓"


def format_table(results: dict) -> str:
    """Fixed-width tables: methods x metrics, then (when the results have them) the mean
    band-PSNR gain over identity per identity band-PSNR bucket."""
    metrics = _metrics(results)
    widths = {m: max(10, len(m) + 4) for m in metrics}
    header = f"{'method':<15}" + "".join(
        f"{m + ' ' + _arrow(results, m):>{widths[m]}}" for m in metrics
    )
    lines = [header, "-" * len(header)]
    for name, scores in results["methods"].items():
        cells = "".join(f"{_fmt(m, scores.get(m)):>{widths[m]}}" for m in metrics)
        lines.append(f"{name:<15}{cells}")
    lines.append(f"({_legend(results)})")
    buckets = results.get("buckets")
    if buckets:
        lines += ["", format_buckets(buckets), f"({buckets_legend(buckets)})"]
    families = results.get("families")
    if families and families["methods"]:
        lines += ["", format_families(families), f"({FAMILIES_LEGEND})"]
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """A markdown table (methods x metrics) with a legend and notes on what was left out."""
    metrics = _metrics(results)
    band = set(results.get("band_metrics", BAND_METRICS))
    head = [f"{m} {_arrow(results, m)}" + (" [band]" if m in band else "") for m in metrics]
    lines = [
        "| method | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for name, scores in results["methods"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m, scores.get(m)) for m in metrics) + " |")
    lines += ["", _legend(results) + "."]
    buckets = results.get("buckets")
    if buckets:
        lines += ["", "### Gain over identity by seam difficulty", ""]
        lines += [format_buckets(buckets, markdown=True), "", buckets_legend(buckets) + "."]
    families = results.get("families")
    if families and families["methods"]:
        lines += ["", "### Gain over identity by artifact family", ""]
        lines += [format_families(families, markdown=True), "", FAMILIES_LEGEND + "."]
    if results.get("skipped"):
        lines += ["", "Left out:"] + [f"- {k}: {v}" for k, v in results["skipped"].items()]
    cases = results.get("cases")
    if cases and cases.get("path"):
        lines += ["", f"Cases sheet: {Path(cases['path']).name} ({cases['ranked_by']})."]
    return "\n".join(lines) + "\n"


def format_csv(results: dict) -> str:
    """CSV, one row per method: ``method,<metric>,...``; ``#`` comment lines at the end
    give each metric's direction and whether it is a band metric."""
    metrics = _metrics(results)
    band = set(results.get("band_metrics", BAND_METRICS))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", *metrics])
    for name, scores in results["methods"].items():
        writer.writerow([name, *(scores.get(m, "") for m in metrics)])
    for m in metrics:
        direction = "higher" if _arrow(results, m) == "↑" else "lower"
        where = "band" if m in band else "whole image"
        if m in COMPARISON_METRICS:
            where += ", against identity sample by sample"
        if m == "harm_rate":
            where += f", % of samples more than {results.get('harm_margin_db', 0.5):g} dB worse"
        if m == "texture_gap":
            where += ", rings just inside / outside the mask; dB"
        if m == "texture_gap_closed":
            where += ", % of identity's mean texture gap closed"
        buffer.write(f"# {m}: {direction} is better; {where}\n")
    return buffer.getvalue()


def report_paths(path: str | Path) -> dict[str, Path]:
    """The files written next to ``--out results.json``."""
    path = Path(path)
    return {
        "json": path,
        "markdown": path.with_suffix(".md"),
        "csv": path.with_suffix(".csv"),
        "cases": path.parent / "cases.png",
    }


def write_results(results: dict, path: str | Path) -> Path:
    """Write the JSON at ``path`` and the markdown and CSV tables beside it; returns ``path``."""
    paths = report_paths(path)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(format_markdown(results))
    paths["csv"].write_text(format_csv(results))
    return paths["json"]
