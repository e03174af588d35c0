"""The bar a shipped refiner must clear on Kodak (docs/method.md §6): each criterion measured on an
evaluation's results (``pixperfect evaluate`` JSON) and marked pass or fail.

On the default artifact recipe with the TAEF2 round trip, 24 photos x 8 draws:

- band PSNR >= identity + 2.5 dB, and >= the best classical baseline + 1.0 dB;
- band CIEDE2000 <= 0.75 x identity's;
- no identity-difficulty bucket more than 0.1 dB below identity in band PSNR;
- harm rate (samples > 0.5 dB worse than identity in band PSNR) <= 5%;
- seam_grad <= identity's.
"""

from __future__ import annotations

from collections.abc import Mapping

from pixperfect.evaluation.baselines import BASELINES

GAIN_OVER_IDENTITY_DB = 2.5
GAIN_OVER_BASELINE_DB = 1.0
CIEDE_RATIO = 0.75
BUCKET_LOSS_DB = 0.1
HARM_RATE_PCT = 5.0


def best_baseline(means: Mapping) -> str | None:
    """The classical baseline with the best band PSNR among those scored in ``means`` (every
    entry of :data:`~pixperfect.evaluation.baselines.BASELINES` counts), or None."""
    scored = {k: means[k]["band_psnr"] for k in BASELINES if k in means}
    return max(scored, key=scored.get) if scored else None


def check_acceptance(results: Mapping, method: str = "refiner") -> list[dict]:
    """One row per criterion: ``criterion``, ``value``, ``target`` (both printable) and
    ``passed``. Needs identity and ``method`` in the results; a baseline criterion is
    skipped (``passed`` None) when no classical baseline was scored."""
    means = results["methods"]
    if "identity" not in means or method not in means:
        raise ValueError(f"acceptance needs the identity and {method!r} rows in the results")
    ours, identity = means[method], means["identity"]
    rows = []

    def row(criterion: str, value: float, target: float, passed: bool | None, fmt: str) -> None:
        rows.append(
            {
                "criterion": criterion,
                "value": fmt.format(value),
                "target": fmt.format(target),
                "passed": passed,
            }
        )

    psnr = ours["band_psnr"]
    target = identity["band_psnr"] + GAIN_OVER_IDENTITY_DB
    row(f"band PSNR >= identity + {GAIN_OVER_IDENTITY_DB}", psnr, target, psnr >= target, "{:.2f}")
    best = best_baseline(means)
    if best is not None:
        target = means[best]["band_psnr"] + GAIN_OVER_BASELINE_DB
        row(
            f"band PSNR >= best baseline ({best}) + {GAIN_OVER_BASELINE_DB}",
            psnr,
            target,
            psnr >= target,
            "{:.2f}",
        )
    ciede = ours["band_ciede2000"]
    target = CIEDE_RATIO * identity["band_ciede2000"]
    row(f"band CIEDE2000 <= {CIEDE_RATIO} x identity", ciede, target, ciede <= target, "{:.3f}")
    gains = results["buckets"]["methods"][method]["gain_db"]
    filled = [g for g in gains if g is not None]
    worst = min(filled) if filled else 0.0
    row(
        f"worst bucket gain >= -{BUCKET_LOSS_DB} dB",
        worst,
        -BUCKET_LOSS_DB,
        worst >= -BUCKET_LOSS_DB,
        "{:+.2f}",
    )
    harm = ours["harm_rate"]
    row(f"harm rate <= {HARM_RATE_PCT:g}%", harm, HARM_RATE_PCT, harm <= HARM_RATE_PCT, "{:.1f}")
    grad, limit = ours["seam_grad"], identity["seam_grad"]
    row("seam_grad <= identity", grad, limit, grad <= limit, "{:.4f}")
    return rows


def format_acceptance(rows: list[dict], markdown: bool = False) -> str:
    mark = {True: "pass", False: "FAIL", None: "-"}
    if markdown:
        lines = ["| criterion | measured | target | |", "|---|---:|---:|---|"]
        lines += [
            f"| {r['criterion']} | {r['value']} | {r['target']} | {mark[r['passed']]} |"
            for r in rows
        ]
        return "\n".join(lines)
    width = max(len(r["criterion"]) for r in rows)
    return "\n".join(
        f"{r['criterion']:<{width}}  {r['value']:>8}  (target {r['target']:>8})  "
        f"{mark[r['passed']]}"
        for r in rows
    )


def accepted(rows: list[dict]) -> bool:
    return all(r["passed"] is not False for r in rows)
