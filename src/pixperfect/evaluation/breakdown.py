"""Where a method helps and where it harms: its band PSNR sample by sample against
identity's (the composite as the editor hands it over), instead of only in the mean.

- ``band_psnr_gain``: the mean over samples of (method's band PSNR - identity's), dB;
  higher is better.
- ``harm_rate``: the share of samples, in %, on which the method's band PSNR is more than
  ``HARM_MARGIN_DB`` below identity's: how often using it makes an edit worse, which a
  positive mean gain can hide. Lower is better.
- buckets: the samples grouped by identity's band PSNR (how bad the seam was as handed
  over; edges ``BUCKET_EDGES_DB``) and, per bucket, the method's mean gain: a refiner can
  gain on bad seams and lose on nearly invisible ones, where any change is a loss.

PSNR is clamped at ``PSNR_CAP_DB`` before any difference is taken, so a sample without any
difference in the band (PSNR infinite, or at :mod:`pixperfect.metrics`' own 100 dB cap)
gives finite gains and no NaN means; such a sample goes into the top bucket.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

BUCKET_EDGES_DB = (25.0, 30.0, 35.0)  # identity band PSNR: < 25, 25-30, 30-35, >= 35
HARM_MARGIN_DB = 0.5  # a loss of more than this against identity counts as harm
PSNR_CAP_DB = 100.0  # PSNR clamped here for gain arithmetic (the metrics' own cap)


def clamp_psnr(value: float) -> float:
    """PSNR for arithmetic: +inf (and anything above the cap) becomes ``PSNR_CAP_DB``."""
    return min(float(value), PSNR_CAP_DB)


def bucket_labels(edges: Sequence[float] = BUCKET_EDGES_DB) -> list[str]:
    """``["< 25", "25-30", "30-35", ">= 35"]`` for the default edges; each bucket holds
    ``lo <= psnr < hi``."""

    def num(x: float) -> str:
        return f"{x:g}"

    inner = [f"{num(lo)}-{num(hi)}" for lo, hi in zip(edges, edges[1:], strict=False)]
    return [f"< {num(edges[0])}", *inner, f">= {num(edges[-1])}"]


def bucket_index(identity_psnr: float, edges: Sequence[float] = BUCKET_EDGES_DB) -> int:
    """The bucket of a sample by identity's band PSNR; infinite PSNR is the top bucket."""
    if math.isnan(identity_psnr):
        raise ValueError("identity band PSNR is NaN")
    return bisect.bisect_right(list(edges), clamp_psnr(identity_psnr))


def gains(method_psnr: Sequence[float], identity_psnr: Sequence[float]) -> list[float]:
    """Per-sample band-PSNR gain over identity (dB), both clamped at ``PSNR_CAP_DB``."""
    if len(method_psnr) != len(identity_psnr):
        raise ValueError(f"{len(method_psnr)} method scores for {len(identity_psnr)} samples")
    return [clamp_psnr(m) - clamp_psnr(i) for m, i in zip(method_psnr, identity_psnr, strict=True)]


def harm_rate(
    method_psnr: Sequence[float],
    identity_psnr: Sequence[float],
    margin: float = HARM_MARGIN_DB,
) -> float:
    """% of samples whose band PSNR is more than ``margin`` dB below identity's (0 for no
    samples)."""
    return _harm(gains(method_psnr, identity_psnr), margin) or 0.0


def _harm(g: list[float], margin: float) -> float | None:
    return 100.0 * sum(x < -margin for x in g) / len(g) if g else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare_to_identity(
    band_psnr: Mapping[str, Sequence[float]],
    identity_psnr: Sequence[float],
    edges: Sequence[float] = BUCKET_EDGES_DB,
    margin: float = HARM_MARGIN_DB,
) -> dict:
    """``band_psnr``: each method's per-sample band PSNR (identity's own row, if there, is
    skipped), in the order of ``identity_psnr``. Returns

    - ``"methods"``: ``{method: {"band_psnr_gain": dB, "harm_rate": %}}``;
    - ``"buckets"``: the edges, labels, sample count per bucket and, per method and bucket,
      the mean gain (None for an empty bucket) and the harm rate.
    """
    index = [bucket_index(p, edges) for p in identity_psnr]
    labels = bucket_labels(edges)
    methods, per_bucket = {}, {}
    for name, scores in band_psnr.items():
        if name == "identity":
            continue
        g = gains(scores, identity_psnr)
        methods[name] = {"band_psnr_gain": _mean(g) or 0.0, "harm_rate": _harm(g, margin) or 0.0}
        split = [[x for x, b in zip(g, index, strict=True) if b == k] for k in range(len(labels))]
        per_bucket[name] = {
            "gain_db": [_mean(part) for part in split],
            "harm_rate": [_harm(part, margin) for part in split],
        }
    buckets = {
        "by": "identity band PSNR (dB)",
        "edges_db": list(edges),
        "labels": labels,
        "samples": [index.count(k) for k in range(len(labels))],
        "harm_margin_db": margin,
        "psnr_cap_db": PSNR_CAP_DB,
        "methods": per_bucket,
    }
    return {"methods": methods, "buckets": buckets}


def format_buckets(buckets: Mapping, markdown: bool = False) -> str:
    """The bucket table: methods as rows, identity band-PSNR buckets as columns, mean
    band-PSNR gain over identity in the cells (dB, signed); a first row gives the count."""
    labels = [f"{label} dB" if i == 0 else label for i, label in enumerate(buckets["labels"])]
    return _format_grid("identity band PSNR", labels, buckets, markdown)


def _format_grid(title: str, labels: list[str], table: Mapping, markdown: bool) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:+.2f}"

    rows = [("samples", [str(n) for n in table["samples"]])]
    rows += [(name, [cell(v) for v in b["gain_db"]]) for name, b in table["methods"].items()]
    if markdown:
        lines = [f"| {title} | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
        return "\n".join(lines)
    width = max(10, *(len(label) + 2 for label in labels))
    header = f"{title:<20}" + "".join(f"{label:>{width}}" for label in labels)
    lines = [header, "-" * len(header)]
    lines += [f"{name:<20}" + "".join(f"{c:>{width}}" for c in cells) for name, cells in rows]
    return "\n".join(lines)


def buckets_legend(buckets: Mapping) -> str:
    return (
        "mean band-PSNR gain over identity (dB) by how bad the seam was as handed over "
        "(identity's band PSNR; each bucket lo <= PSNR < hi, a sample without any band "
        f"difference in the top one); PSNR clamped at {buckets['psnr_cap_db']:g} dB for the "
        "gains; '-': no sample in the bucket"
    )


def compare_by_family(
    band_psnr: Mapping[str, Sequence[float]],
    identity_psnr: Sequence[float],
    families: Sequence[Sequence[str]],
    margin: float = HARM_MARGIN_DB,
) -> dict:
    """Like :func:`compare_to_identity`, split by artifact family instead of difficulty: a
    sample counts in every family applied to it (``families[i]``: its names), so the
    columns overlap. Returns ``names``, ``samples`` per family and, per method, the mean
    gain and harm rate per family (None for a family no sample has)."""
    names = sorted({f for fs in families for f in fs}, key=_family_order)
    members = [[i for i, fs in enumerate(families) if name in fs] for name in names]
    methods = {}
    for method, scores in band_psnr.items():
        if method == "identity":
            continue
        g = gains(scores, identity_psnr)
        methods[method] = {
            "gain_db": [_mean([g[i] for i in idx]) for idx in members],
            "harm_rate": [_harm([g[i] for i in idx], margin) for idx in members],
        }
    return {"names": names, "samples": [len(idx) for idx in members], "methods": methods}


def _family_order(name: str) -> tuple[int, str]:
    from data_sim.simulator import FAMILIES

    return (FAMILIES.index(name) if name in FAMILIES else len(FAMILIES), name)


def format_families(table: Mapping, markdown: bool = False) -> str:
    """The family table: methods as rows, artifact families as columns, mean band-PSNR
    gain over identity (dB) in the cells; a first row gives the count."""
    return _format_grid("artifact family", table["names"], table, markdown)
