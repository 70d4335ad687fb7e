"""profiler.heap: freed whole-image temporaries are reused instead of faulted in again."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from profiler import heap

glibc = pytest.mark.skipif(heap._glibc() is None, reason="mallopt is glibc's: nothing to tune on this platform")


def _faults_of_churn(rounds: int = 12, mib: int = 8) -> int:
    """Minor page faults of allocating, filling and freeing a ``mib`` MiB array ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        a = np.empty(mib * 2**20 // 8)
        a.fill(1.0)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_freed_arrays_are_reused_without_page_faults():
    libc = heap._glibc()
    try:
        # glibc's starting values (128 KiB): every 8 MiB array is mmap'ed and faulted in anew
        libc.mallopt(heap._M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(heap._M_TRIM_THRESHOLD, 128 * 1024)
        cold = _faults_of_churn()
        assert heap.keep_freed_memory()
        _faults_of_churn(rounds=1)  # the first array grows the heap once
        warm = _faults_of_churn()
    finally:
        assert heap.give_back_freed_memory()
    # 12 × 8 MiB is 24,576 pages of 4 KiB (fewer with transparent huge pages): each round faults
    # them in again; with the heap kept, the same memory serves every round
    assert cold >= 12 * 8 * 2**20 // (2 * 2**20) and warm < cold / 10, (cold, warm)


def _rss_pages() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1])


@glibc
def test_reused_heap_applies_for_the_block_only():
    with heap.reused_heap() as applied:
        assert applied
        _faults_of_churn(rounds=1)
        assert _faults_of_churn(rounds=6) < 6 * 8 * 2**20 // 4096 / 10
        many = [np.ones(10 * 2**20 // 8) for _ in range(20)]  # 200 MiB from the heap, freed in the block:
        del many                                               # kept for reuse …
        kept = _rss_pages()
    assert _rss_pages() < kept - 100 * 2**20 // 4096  # … and given back after it


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    assert heap.keep_freed_memory() is False and heap.give_back_freed_memory() is False
    with heap.reused_heap() as applied:
        assert applied is False
