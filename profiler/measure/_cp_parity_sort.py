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

:func:`numpy1_argsort_partial` runs the same sort only in the sub-arrays that can hold given
values (the RadialDistribution centres need the order of an object's tied maxima only): those
elements end where the full sort puts them (tests/test_measure_radial_centers.py).
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


@nb.njit(cache=True)
def _holds_wanted(wanted, lo, hi):
    # does the sorted array ``wanted`` hold a value v with lo <= v <= hi?
    a = 0
    b = wanted.size
    while a < b:  # first index with wanted[index] >= lo
        m = (a + b) >> 1
        if wanted[m] < lo:
            a = m + 1
        else:
            b = m
    return a < wanted.size and not (hi < wanted[a])


@nb.njit(cache=True)
def numpy1_argsort_partial(v, wanted):
    """NumPy 1.26's ``argsort(v)`` (as :func:`numpy1_argsort_values`) carried out only where it
    decides the final place of an element whose value is in ``wanted`` (sorted ascending).

    Every quicksort partition leaves values ≤ the pivot on its left and ≥ it on its right, and
    NumPy then sorts each side on its own (only the side's contents and the depth budget decide
    what happens inside it). So each pending sub-array's values lie between two known bounds; a
    sub-array whose bounds enclose no wanted value holds no wanted element and is left as it is.
    Every other sub-array is treated exactly as NumPy 1.26 treats it (same pivots, swaps, depth
    budget, insertion sort, heapsort), so every element whose value is wanted ends at the same
    position, among the same neighbours, as in the full sort.

    Returns (t, w, leaves): the partly sorted indices and values, and the ``leaves`` (start, end)
    pairs (inclusive; rows of an (m, 2) array) of the finished pieces that may hold wanted values:
    every wanted element lies in one of them, and there ``t`` and ``w`` equal the full sort's.
    """
    num = v.size
    t = np.arange(num)
    w = v.copy()
    leaves = np.empty((64, 2), np.int64)
    nl = 0
    if num < 1 or wanted.size == 0:
        return t, w, leaves[:0]
    lo = w[0]
    hi = w[0]
    for i in range(num):
        x = w[i]
        if x < lo:
            lo = x
        if hi < x:
            hi = x
    if not _holds_wanted(wanted, lo, hi):
        return t, w, leaves[:0]
    if num < 2:
        leaves[0, 0] = 0
        leaves[0, 1] = 0
        return t, w, leaves[:1]
    stack = np.empty(256, np.int64)
    depth = np.empty(128, np.int64)
    bounds = np.empty(256, w.dtype)
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
                cdepth -= 1
                # [pl, pi - 1] holds values in [lo, vp], [pi + 1, pr] values in [vp, hi]; the pivot
                # itself is at its final place (a leaf of one when its value is wanted)
                keep_l = _holds_wanted(wanted, lo, vp)
                keep_r = _holds_wanted(wanted, vp, hi)
                if keep_l or keep_r:
                    if _holds_wanted(wanted, vp, vp):
                        if nl == leaves.shape[0]:
                            leaves = _grow(leaves)
                        leaves[nl, 0] = pi
                        leaves[nl, 1] = pi
                        nl += 1
                if keep_l and keep_r:
                    # NumPy pushes the larger side and goes on with the smaller one
                    if pi - pl < pr - pi:
                        stack[sp] = pi + 1
                        stack[sp + 1] = pr
                        bounds[sp] = vp
                        bounds[sp + 1] = hi
                        sp += 2
                        pr = pi - 1
                        hi = vp
                    else:
                        stack[sp] = pl
                        stack[sp + 1] = pi - 1
                        bounds[sp] = lo
                        bounds[sp + 1] = vp
                        sp += 2
                        pl = pi + 1
                        lo = vp
                    depth[dp] = cdepth
                    dp += 1
                elif keep_l or keep_r:
                    # NumPy goes on with the smaller side and pushes the larger one, which meets
                    # the depth check (heapsort when the budget is spent) when it is popped
                    small_l = pi - pl < pr - pi
                    if keep_l == small_l:
                        if keep_l:
                            pr = pi - 1
                            hi = vp
                        else:
                            pl = pi + 1
                            lo = vp
                    else:
                        if keep_l:
                            stack[sp] = pl
                            stack[sp + 1] = pi - 1
                            bounds[sp] = lo
                            bounds[sp + 1] = vp
                        else:
                            stack[sp] = pi + 1
                            stack[sp + 1] = pr
                            bounds[sp] = vp
                            bounds[sp + 1] = hi
                        sp += 2
                        depth[dp] = cdepth
                        dp += 1
                        pl = 1
                        pr = 0  # nothing left on the smaller side: pop the larger one
                        break
                else:
                    if _holds_wanted(wanted, vp, vp):
                        if nl == leaves.shape[0]:
                            leaves = _grow(leaves)
                        leaves[nl, 0] = pi
                        leaves[nl, 1] = pi
                        nl += 1
                    pl = 1
                    pr = 0  # nothing left here: an empty range
                    break
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
        if pl <= pr:
            if nl == leaves.shape[0]:
                leaves = _grow(leaves)
            leaves[nl, 0] = pl
            leaves[nl, 1] = pr
            nl += 1
        if sp == 0:
            break
        sp -= 2
        pl = stack[sp]
        pr = stack[sp + 1]
        lo = bounds[sp]
        hi = bounds[sp + 1]
        dp -= 1
        cdepth = depth[dp]
    return t, w, leaves[:nl]


@nb.njit(cache=True)
def _grow(a):
    b = np.empty((2 * a.shape[0], 2), a.dtype)
    b[:a.shape[0]] = a
    return b
