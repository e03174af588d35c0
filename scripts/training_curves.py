"""Learning curves of training runs, as a table and as SVG charts (no plotting library).

    .venv/bin/python scripts/training_curves.py RUN [RUN ...] --tags val/band_psnr,... \
        [--svg docs/img/curves.svg] [--title "..."]

RUN is a run folder (``runs/<name>``, its ``tb/`` is read) or a TensorBoard folder; a
label can be given as ``label=path``. Tags may end in ``*`` to take every matching tag
(``val_family/*/band_psnr``); ``--ref TAG=VALUE`` draws a dashed line (identity's score)
on that tag's chart. Prints, per tag, one row per logged step and one column per
run; with ``--svg`` writes one chart per tag, the runs as coloured lines.
"""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a TensorBoard folder (all event files, later steps win)."""
    tb = folder / "tb" if (folder / "tb").is_dir() else folder
    series: dict[str, dict[int, float]] = {}
    for events in sorted(tb.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                series.setdefault(tag, {})[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in series.items()}


def matching(tags: list[str], available: set[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        hits = sorted(t for t in available if fnmatch.fnmatch(t, tag)) if "*" in tag else [tag]
        out += [t for t in hits if t not in out]
    return out


def chart(
    title: str,
    lines: dict[str, list[tuple[int, float]]],
    reference: float | None = None,
    w: int = 420,
    h: int = 260,
) -> str:
    """One SVG <g> chart: axes with min/max labels, a polyline per run, a legend, and an
    optional dashed horizontal ``reference`` line (e.g. identity's score)."""
    points = [p for line in lines.values() for p in line]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    values = [p[1] for p in points] + ([reference] if reference is not None else [])
    y0, y1 = min(values), max(values)
    x1, y1 = max(x1, x0 + 1), y1 if y1 > y0 else y0 + 1e-6
    left, top, pw, ph = 56, 24, w - 70, h - 60

    def xy(step: float, value: float) -> str:
        return (
            f"{left + pw * (step - x0) / (x1 - x0):.1f},{top + ph * (y1 - value) / (y1 - y0):.1f}"
        )

    parts = [
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{title}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{y1:.4g}</text>',
        f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">{y0:.4g}</text>',
        f'<text x="{left}" y="{top + ph + 14}" font-size="10">{x0}</text>',
        f'<text x="{left + pw}" y="{top + ph + 14}" font-size="10" text-anchor="end">'
        f"step {x1}</text>",
    ]
    if reference is not None:
        a, b = xy(x0, reference), xy(x1, reference)
        parts.append(
            f'<polyline points="{a} {b}" stroke="#555" stroke-dasharray="4,3" fill="none"/>'
            f'<text x="{left + pw - 4}" y="{b.split(",")[1]}" dy="-3" font-size="10" '
            f'text-anchor="end" fill="#555">{reference:.4g}</text>'
        )
    for i, (label, line) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        if line:
            pts = " ".join(xy(s, v) for s, v in line)
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
            )
        parts.append(
            f'<text x="{left + 6 + 130 * (i % 3)}" y="{top + ph + 30 + 12 * (i // 3)}" '
            f'font-size="10" fill="{colour}">{label}</text>'
        )
    return "\n".join(parts)


def write_svg(path: Path, charts: list[str], columns: int = 2, w: int = 420, h: int = 290) -> None:
    rows = (len(charts) + columns - 1) // columns
    body = [
        f'<g transform="translate({w * (i % columns)},{h * (i // columns)})">{c}</g>'
        for i, c in enumerate(charts)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * columns}" height="{h * rows}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        + "\n".join(body)
        + "</svg>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, optionally label=path")
    parser.add_argument("--tags", default="val/band_psnr", help="comma-separated, * allowed")
    parser.add_argument("--svg", type=Path, help="write the charts here")
    parser.add_argument("--every", type=int, default=1, help="print every n-th row")
    parser.add_argument(
        "--ref", action="append", default=[], help="TAG=VALUE: a dashed reference line"
    )
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, _, path = spec.rpartition("=")
        runs[label or Path(path).name] = read_scalars(Path(path))
    available = {t for series in runs.values() for t in series}
    refs = {tag: float(v) for tag, _, v in (r.rpartition("=") for r in args.ref)}
    charts = []
    for tag in matching(args.tags.split(","), available):
        lines = {label: series.get(tag, []) for label, series in runs.items()}
        steps = sorted({s for line in lines.values() for s, _ in line})[:: args.every]
        print(f"\n{tag}\n| step | " + " | ".join(lines) + " |")
        for step in steps:
            values = [dict(line).get(step) for line in lines.values()]
            cells = ["" if v is None else f"{v:.4g}" for v in values]
            print(f"| {step} | " + " | ".join(cells) + " |")
        charts.append(chart(tag, lines, refs.get(tag)))
    if args.svg:
        write_svg(args.svg, [c for c in charts if c])
        print(f"\ncharts: {args.svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
