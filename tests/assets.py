"""The workplace's shared assets (real photos, TAEF2 weights) beside the checkout.

Tests read them from ``../shared``; a missing asset skips on a developer machine and fails
under ``CI=true``, where it must be present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TAESD_DIR = SHARED / "weights" / "taesd"
KODAK = SHARED / "data" / "photos" / "kodak"


def require(path: Path) -> Path:
    """``path`` if it exists; otherwise fail under CI=true and skip elsewhere."""
    if not path.exists():
        message = f"shared asset {path} is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
