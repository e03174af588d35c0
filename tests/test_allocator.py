"""Tests for the process allocator setting (pixperfect.allocator)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pixperfect.allocator import user_chose_allocator

GLIBC_LINUX = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize(
    ("environ", "chosen"),
    [
        ({"PATH": "/usr/bin"}, None),
        ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES"),
        ({"GLIBC_TUNABLES": "glibc.rtld.nns=4"}, None),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "LD_PRELOAD"),
        ({"LD_PRELOAD": "/opt/libfoo.so"}, None),
    ],
)
def test_a_users_own_allocator_choice_is_recognised(environ: dict, chosen: str | None) -> None:
    assert user_chose_allocator(environ) == chosen


def _keep_in_fresh_process(**env: str) -> str:
    code = "from pixperfect.allocator import keep_freed_memory; print(keep_freed_memory())"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(not GLIBC_LINUX, reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc_and_steps_aside_for_the_user() -> None:
    assert _keep_in_fresh_process() == "True"
    assert _keep_in_fresh_process(MALLOC_TRIM_THRESHOLD_="0") == "False"
