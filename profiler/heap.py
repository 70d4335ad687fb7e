"""How the C heap treats the per-site work's large temporary arrays (glibc's ``mallopt``).

Measuring a site allocates and frees hundreds of whole-image temporaries (a 1024 × 1280 float64
image is 10 MiB). With glibc's defaults a freed block at the top of the heap is given back to the
operating system once more than the trim threshold is free, and the next array of that size faults
its pages in again, each zero-filled by the kernel: on a BBBC021 site that was ≈ 50,000 minor page
faults and 0.12–0.18 s of kernel time in ≈ 1.3 s of measurement. Dask's nanny makes it worse on the
workers: it starts them with ``MALLOC_TRIM_THRESHOLD_=65536``.

:func:`keep_freed_memory` raises the thresholds so that freed memory stays in the process for the
next site: arrays up to :data:`MMAP_THRESHOLD` come from the heap (glibc's own largest mmap
threshold) and up to :data:`TRIM_THRESHOLD` of free heap is kept. The pages faulted per site then
fall to a few hundred and the measurement's CPU time by ≈ 10 % (measured 2026-12-07 on this
project's 2-core machine, 3 BBBC021 sites: 1.29–1.38 → 1.13–1.19 s; with a 64 MiB trim threshold
25,000–36,000 faults remained). The cost is memory that stays with the process, bounded by the
trim threshold above the run's peak. :func:`reused_heap` applies it for a block and, after it,
gives the free memory back and lowers the trim threshold to twice the mmap threshold (where glibc's
own adjustment stops). Values are the same either way: only where memory comes from changes.

Only glibc has ``mallopt``; elsewhere (macOS, musl) these functions do nothing and say so.

:func:`gc_frozen` is the Python side of the same concern: a long run's many short-lived container
objects trigger cyclic collections that would otherwise walk every object of the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import platform
import sys
import threading
from collections.abc import Iterator

#: arrays up to this size are taken from the heap, not mmap'ed one by one (glibc's maximum on 64-bit)
MMAP_THRESHOLD = 32 * 2**20
#: free memory the heap keeps for reuse before it gives any back to the operating system
TRIM_THRESHOLD = 256 * 2**20

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=1)
def _glibc():
    """glibc's C library (with ``mallopt`` and ``malloc_trim``), or None on any other platform."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Keep freed memory in this process for reuse (module docstring); True where it was applied.
    Idempotent and cheap (two ``mallopt`` calls): every site task calls it, so that Dask workers
    started with another setting get it too."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)


def give_back_freed_memory() -> bool:
    """Return the heap's free memory to the operating system and trim above ``2 × MMAP_THRESHOLD``
    from now on; True where it was applied."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
    libc.malloc_trim(0)
    return bool(ok)


_depth = 0                # reused_heap blocks open now (a nested block leaves the settings to the outer one)
_depth_lock = threading.Lock()


@contextlib.contextmanager
def reused_heap() -> Iterator[bool]:
    """:func:`keep_freed_memory` for the block, :func:`give_back_freed_memory` after it; yields
    whether the settings apply on this platform. Blocks nest (e.g. ``profiler extract``'s run and the
    streaming aggregation inside it): the memory is given back when the outermost block ends."""
    global _depth
    with _depth_lock:
        applied = keep_freed_memory()
        _depth += 1
    try:
        yield applied
    finally:
        with _depth_lock:
            _depth -= 1
            if applied and _depth == 0:
                give_back_freed_memory()


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Leave the objects alive now out of Python's cyclic garbage collections until the block ends.

    ``profiler extract`` and the streaming aggregation allocate many container objects
    (pandas/Arrow wrappers, numba's typed values), which triggers a handful of full collections per
    run; each walks every object of the process (the modules, numba's dispatchers, the loaded
    pipeline …), ≈ 0.15 s each. :func:`gc.freeze` moves those into the permanent generation, so the
    collections walk only what the run made. Nothing is leaked: garbage made during the block is
    still collected, and the frozen objects return to the oldest generation afterwards
    (:func:`gc.unfreeze`). A caller that froze objects itself (:func:`gc.get_freeze_count` > 0), or
    an enclosing block, is left alone."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
