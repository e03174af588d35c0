"""A row of the GPU check's table, how its value is written, the table itself, and
:func:`guarded`: a row whose measurement raises reads FAILED and the others still run."""

from __future__ import annotations

import math
import sys
import traceback
from dataclasses import dataclass

from harness import markdown_table

from .setup import SharedAssetMissing


@dataclass
class Row:
    number: str
    key: str
    measure: str
    value: float | str | None = None  # None: not measured (see skipped)
    note: str = ""
    skipped: str = ""
    failed: str = ""  # the error, when measuring raised

    def cell(self) -> str:
        if self.failed:
            return f"FAILED: {self.failed}"
        if self.value is None:
            return f"skipped: {self.skipped}"
        return self.value if isinstance(self.value, str) else fmt(self.value)


def fmt(value: float) -> str:
    """Three significant digits, never in exponent notation."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def guarded(failed_rows: list[Row], run) -> list[Row]:
    """``run()``'s rows; if it raises, ``failed_rows`` marked FAILED (traceback on stderr),
    so one broken row does not cost the others' device time."""
    try:
        return run()
    except SharedAssetMissing:
        raise
    except Exception as e:  # noqa: BLE001 - reported in the table and on stderr
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:160]
        for row in failed_rows:
            row.failed = f"{type(e).__name__}: {first}"
        return failed_rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(rows: list[Row]) -> str:
    return markdown_table(
        ["#", "measure", "value", "how"], [(r.number, r.measure, r.cell(), r.note) for r in rows]
    )
