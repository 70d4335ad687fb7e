"""profiler.heap: freed whole-image temporaries are reused instead of faulted in again.

The checks run in a fresh interpreter: what a process imported before (a library that brings its
own malloc, e.g. xgboost's) decides where NumPy's memory comes from."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from profiler import heap

glibc = pytest.mark.skipif(heap._glibc() is None, reason="mallopt is glibc's: nothing to tune on this platform")

_PRELUDE = textwrap.dedent('''
    import json, resource
    import numpy as np
    from profiler import heap

    def churn(rounds=12, mib=8):
        """minor page faults of allocating, filling and freeing a `mib` MiB array `rounds` times"""
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            a = np.empty(mib * 2**20 // 8)
            a.fill(1.0)
            del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def rss_pages():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1])

    libc = heap._glibc()
''')


def _run(body: str) -> dict:
    from conftest import REPO

    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc
def test_freed_arrays_are_reused_without_page_faults():
    r = _run('''
        # glibc's starting values (128 KiB): every 8 MiB array is mmap'ed and faulted in anew
        libc.mallopt(heap._M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(heap._M_TRIM_THRESHOLD, 128 * 1024)
        cold = churn()
        applied = heap.keep_freed_memory()
        churn(rounds=1)  # the first array grows the heap once
        warm = churn()
        print(json.dumps({"cold": cold, "warm": warm, "applied": applied}))
    ''')
    # 12 × 8 MiB is 24,576 pages of 4 KiB (fewer with transparent huge pages): each round faults them
    # in again; with the heap kept, the same memory serves every round
    assert r["applied"]
    assert r["cold"] >= 12 * 8 * 2**20 // (2 * 2**20) and r["warm"] < r["cold"] / 10, r


@glibc
def test_reused_heap_applies_for_the_block_only():
    r = _run('''
        with heap.reused_heap() as applied:
            churn(rounds=1)
            warm = churn(rounds=6)
            many = [np.ones(10 * 2**20 // 8) for _ in range(20)]  # 200 MiB from the heap, freed in the block:
            del many                                               # kept for reuse …
            kept = rss_pages()
        after = rss_pages()                                        # … and given back after it
        print(json.dumps({"applied": applied, "warm": warm, "kept": kept, "after": after}))
    ''')
    assert r["applied"] and r["warm"] < 6 * 8 * 2**20 // 4096 / 10, r
    assert r["after"] < r["kept"] - 100 * 2**20 // 4096, r


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    assert heap.keep_freed_memory() is False and heap.give_back_freed_memory() is False
    with heap.reused_heap() as applied:
        assert applied is False


@glibc
def test_nested_reused_heap_keeps_the_outer_blocks_setting():
    """The streaming aggregation's block inside extract's: leaving the inner one gives nothing back."""
    r = _run('''
        with heap.reused_heap():
            with heap.reused_heap() as inner:
                churn(rounds=1)
            warm = churn(rounds=6)      # still reused after the inner block
            many = [np.ones(10 * 2**20 // 8) for _ in range(20)]
            del many
            kept = rss_pages()
        after = rss_pages()
        print(json.dumps({"inner": inner, "warm": warm, "kept": kept, "after": after}))
    ''')
    assert r["inner"] and r["warm"] < 6 * 8 * 2**20 // 4096 / 10, r
    assert r["after"] < r["kept"] - 100 * 2**20 // 4096, r
