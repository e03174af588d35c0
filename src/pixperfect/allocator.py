"""The process's CPU memory allocator: keep freed memory for reuse (glibc only).

PyTorch has no caching allocator for CPU tensors: every temporary is a ``malloc`` and a
``free``. glibc serves large blocks (above a threshold that starts at 128 KiB) with fresh
``mmap`` pages and returns freed memory to the system, so the next full-batch tensor page-faults
all over again. On the 2-core development machine this was about 40% of a simulation
benchmark's CPU time (system time), and a demo training step ran 12-15% faster without it
(346 -> 293-309 ms; ``benchmarks/bench_simulation.py``). PyTorch's CPU tuning guide reaches
for jemalloc or tcmalloc for the same reason; two ``mallopt`` calls get most of it with no
extra package.

:func:`keep_freed_memory` is called by the ``pixperfect`` command and the benchmarks, never at
import: it changes the whole process. It steps aside when the user already chose an allocator
(``LD_PRELOAD``, ``MALLOC_*`` or ``GLIBC_TUNABLES`` in the environment) or when the C library
is not glibc. The cost: memory freed by the process stays mapped, up to its peak use, until
it exits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), and a trim
# threshold far above any batch: only a gigabyte of free memory at the heap's top is returned.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def user_chose_allocator(environ: dict[str, str] | None = None) -> str | None:
    """The environment variable by which the user already tuned or replaced malloc, if any."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if name.startswith("MALLOC_") or (name == "GLIBC_TUNABLES" and "malloc" in value):
            return name
        if name == "LD_PRELOAD" and ("jemalloc" in value or "tcmalloc" in value):
            return name
    return None


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks for reuse instead of unmapping them. Returns whether the
    setting was applied (False: not glibc, or the user's own allocator choice stands)."""
    chosen = user_chose_allocator()
    if chosen is not None:
        log.debug("allocator left as set by %s", chosen)
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    # mallopt returns 1 on success; the mmap threshold also turns off glibc's own adaptive
    # threshold, which is what keeps re-mapping blocks of a few megabytes.
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
