"""NumPy 1.26's ``argsort`` (introsort), reproduced step for step — for CellProfiler parity only.

Why this exists: CellProfiler 5 runs on NumPy 1.26, and some of its measurements break ties by the
order in which NumPy 1.26's *unstable* default argsort leaves equal values. The one that matters
here is the centre of an object in MeasureObjectIntensityDistribution (RadialDistribution): it is
``scipy.ndimage.maximum_position`` of the distance to the object's edge, i.e. the last of the tied
pixels in that argsort's order (19–58 % of BBBC021 objects have ties there). NumPy 2's argsort
orders ties differently (and differently again with AVX-512), so calling ``np.argsort`` would move
the centre of many objects and with it every binned radial feature.

:func:`numpy1_argsort` is ``np.argsort(v)`` exactly as NumPy 1.26 orders it on a machine without
AVX-512 (median-of-3 quicksort, insertion sort below 16 elements, heapsort past 2·log2 n levels),
checked index for index against NumPy 1.26.4 in tests/test_measure_radial.py. Use it only where a
CellProfiler tie-break must be reproduced; anywhere else use NumPy's own sorts.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _msb(n):  # npy_get_msb
    d = 0
    while n > 1:
        n >>= 1
        d += 1
    return d


@nb.njit(cache=True)
def _sift_down(w, t, lo, tv, tt, i, n):
    # place (tv, tt) at heap position i (1-based) of a[1..n] = (w, t)[lo .. lo+n-1], moving larger
    # children up (NumPy 1.26's aheapsort, with the values moved along with the indices)
    j = i << 1
    while j <= n:
        if j < n and w[lo + j - 1] < w[lo + j]:
            j += 1
        if tv < w[lo + j - 1]:
            w[lo + i - 1] = w[lo + j - 1]
            t[lo + i - 1] = t[lo + j - 1]
            i = j
            j += j
        else:
            break
    w[lo + i - 1] = tv
    t[lo + i - 1] = tt


@nb.njit(cache=True)
def _aheapsort(w, t, lo, n):
    # NumPy 1.26's aheapsort on a[1..n] = a0[lo .. lo+n-1]: build the heap, then pop the maximum
    for l in range(n >> 1, 0, -1):
        _sift_down(w, t, lo, w[lo + l - 1], t[lo + l - 1], l, n)
    while n > 1:
        tv = w[lo + n - 1]
        tt = t[lo + n - 1]
        w[lo + n - 1] = w[lo]
        t[lo + n - 1] = t[lo]
        n -= 1
        _sift_down(w, t, lo, tv, tt, 1, n)


@nb.njit(cache=True)
def numpy1_argsort_values(v):
    """(``np.argsort(v)`` exactly as NumPy 1.26 (CellProfiler 5's) orders it without AVX-512,
    ``v`` in that order).

    NumPy 1.26's introsort (median-of-3 quicksort, insertion sort below 16 elements, heapsort past
    2·log2 n levels), step for step; the order of equal values is what decides CellProfiler's
    tie-breaks. The values travel with the indices (every comparison reads contiguous memory
    instead of ``v[t[i]]``), which changes nothing in the comparisons or moves, only their speed.
    """
    num = v.size
    t = np.arange(num)
    w = v.copy()
    if num < 2:
        return t, w
    stack = np.empty(256, np.int64)
    depth = np.empty(128, np.int64)
    sp = 0
    dp = 0
    pl = 0
    pr = num - 1
    cdepth = _msb(num) * 2
    while True:
        if cdepth < 0:
            _aheapsort(w, t, pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                if w[pm] < w[pl]:
                    w[pm], w[pl] = w[pl], w[pm]
                    t[pm], t[pl] = t[pl], t[pm]
                if w[pr] < w[pm]:
                    w[pr], w[pm] = w[pm], w[pr]
                    t[pr], t[pm] = t[pm], t[pr]
                if w[pm] < w[pl]:
                    w[pm], w[pl] = w[pl], w[pm]
                    t[pm], t[pl] = t[pl], t[pm]
                vp = w[pm]
                pi = pl
                pj = pr - 1
                w[pm], w[pj] = w[pj], w[pm]
                t[pm], t[pj] = t[pj], t[pm]
                while True:
                    pi += 1
                    while w[pi] < vp:
                        pi += 1
                    pj -= 1
                    while vp < w[pj]:
                        pj -= 1
                    if pi >= pj:
                        break
                    w[pi], w[pj] = w[pj], w[pi]
                    t[pi], t[pj] = t[pj], t[pi]
                pk = pr - 1
                w[pi], w[pk] = w[pk], w[pi]
                t[pi], t[pk] = t[pk], t[pi]
                if pi - pl < pr - pi:
                    stack[sp] = pi + 1
                    stack[sp + 1] = pr
                    sp += 2
                    pr = pi - 1
                else:
                    stack[sp] = pl
                    stack[sp + 1] = pi - 1
                    sp += 2
                    pl = pi + 1
                cdepth -= 1
                depth[dp] = cdepth
                dp += 1
            for pi in range(pl + 1, pr + 1):
                vi = t[pi]
                vp = w[pi]
                pj = pi
                pk = pi - 1
                while pj > pl and vp < w[pk]:
                    t[pj] = t[pk]
                    w[pj] = w[pk]
                    pj -= 1
                    pk -= 1
                t[pj] = vi
                w[pj] = vp
        if sp == 0:
            break
        sp -= 2
        pl = stack[sp]
        pr = stack[sp + 1]
        dp -= 1
        cdepth = depth[dp]
    return t, w


def numpy1_argsort(v: np.ndarray) -> np.ndarray:
    """``np.argsort(v)`` exactly as NumPy 1.26 orders it (see :func:`numpy1_argsort_values`)."""
    return numpy1_argsort_values(np.ascontiguousarray(v, np.float64))[0]
