"""Numba kernels of :mod:`profiler.profiles.aggregate_stream`: exact NaN-skipping per-column medians and means
of row runs of a column-major float block.

The median of one column's run (its non-NaN values, ranks ``(m-1)//2`` and ``m//2``) is found by
*counting* rather than sorting or moving values around, because a counting pass vectorises (SIMD,
no branches) and costs a fraction of a nanosecond per value:

1. a strided sample of 32 values (NaN skipped) gives seven thresholds around its middle (sample
   ranks c-9, c-6, … c+9: values present in the run);
2. one pass counts, for every threshold t, the values ``< t`` (and the NaNs): the middle ranks
   fall in one bracket ``[t_k, t_k+1)`` of about a tenth of the values (a bracket beyond the
   outer thresholds when the sample misled: still exact, only slower);
3. if that bracket still holds more than 64 values and more than a quarter of the run (the sample
   misled), a second counting pass with seven thresholds evenly spaced inside it narrows it again;
4. the bracket's values are gathered (a branch-free pass) and the wanted ranks selected among
   them: a band select with three-way counts (values below / equal to / inside the band ends, so
   ties and runs of equal values end at once), the few last ones by counting ranks.

Every step is exact (comparisons only; no arithmetic on the values), so the result is the pandas
median: the mean of the two middle values for an even count (computed by the caller in float64),
NaN skipped, NaN for an all-NaN run; ±inf are ordinary values. float32 blocks stay float32 (no
upcast) until that final mean. The kernels work on one column at a time and release the GIL
and are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SMALL = 32     # runs/brackets at most this long: ranks by counting (O(m^2), vectorised)
_GATHER = 64    # a bracket with more values than this and more than 1/_NARROW of the run …
_NARROW = 4     # … is narrowed by a second counting pass (else gathered: the selection in it is cheaper)
_SAMPLE = 32    # strided sample size of the first level
_SPREAD = 3     # sample-rank distance between the seven first-level thresholds


@njit(nogil=True, cache=True, inline="always")
def _pick2(a, m, k1, k2):
    """Values of ranks k1 <= k2 among a[:m] (no NaN; 0 <= k < m): each element's rank range by counting."""
    v1 = a[0]
    v2 = a[0]
    f1 = False
    f2 = False
    for i in range(m):
        v = a[i]
        lt = 0
        le = 0
        for j in range(m):
            u = a[j]
            lt += u < v
            le += u <= v
        if lt <= k1 and k1 < le:
            v1 = v
            f1 = True
        if lt <= k2 and k2 < le:
            v2 = v
            f2 = True
        if f1 and f2:
            break
    return v1, v2


@njit(nogil=True, cache=True)
def _pick7(a, m, c, q, t):
    """t[k] = the value of rank c + (k - 3) q (clamped to [0, m)) among a[:m] (no NaN), k = 0..6."""
    for i in range(m):
        v = a[i]
        lt = 0
        le = 0
        for j in range(m):
            u = a[j]
            lt += u < v
            le += u <= v
        for k in range(7):
            rk = min(max(c + (k - 3) * q, 0), m - 1)
            if lt <= rk and rk < le:
                t[k] = v


@njit(nogil=True, cache=True)
def _select(a, b, m, r1, r2, samp):
    """Values at ranks r1 <= r2 of a[:m] (no NaN); a and b are work buffers of at least m values.

    Each level takes a band [lo, hi] from a strided sample and counts the values below, equal to
    lo, equal to hi and strictly inside; the inside ones move to the other buffer. The band ends
    are values of a, so every level removes at least two values (it always ends)."""
    while True:
        if m <= _SMALL:
            return _pick2(a, m, r1, r2)
        s = 32
        step = m // s
        for i in range(s):
            samp[i] = a[i * step + step // 2]
        c = (r1 * s) // m
        lo_k = max(c - 5, 0)
        hi_k = min(c + 5, s - 1)
        lo, hi = _pick2(samp, s, lo_k, hi_k)
        below = 0
        eqlo = 0
        eqhi = 0
        w = 0
        for i in range(m):
            v = a[i]
            below += v < lo
            eqlo += v == lo
            eqhi += v == hi
            b[w] = v
            w += (v > lo) & (v < hi)
        if lo == hi:
            eqhi = 0
        e2 = below + eqlo
        e3 = e2 + w
        e4 = e3 + eqhi
        if r1 < below or r2 >= e4:  # the band missed: sort (rare; only the sample's bad luck)
            srt = np.sort(a[:m])
            return srt[r1], srt[r2]
        if r1 >= e2 and r2 < e3:
            a, b = b, a
            m = w
            r1 -= e2
            r2 -= e2
            continue
        if r1 < e2:
            v1 = lo
        elif r1 >= e3:
            v1 = hi
        else:  # r1 inside, r2 not: r1 is the largest inside value
            v1 = b[0]
            for i in range(1, w):
                v1 = max(v1, b[i])
        if r2 < e2:
            v2 = lo
        elif r2 >= e3:
            v2 = hi
        else:  # r2 inside, r1 not: r2 is the smallest inside value
            v2 = b[0]
            for i in range(1, w):
                v2 = min(v2, b[i])
        return v1, v2


@njit(nogil=True, cache=True, inline="always")
def _count7(x, t, counts):
    """counts[k] = #(x < t[k]) for the seven thresholds; returns the number of NaNs (vectorised;
    32-bit counters: ≈ 2 % faster than 64-bit ones here, and a run is one well's cells, fewer than
    2**31: :func:`column_medians` checks)."""
    t0 = t[0]
    t1 = t[1]
    t2 = t[2]
    t3 = t[3]
    t4 = t[4]
    t5 = t[5]
    t6 = t[6]
    c0 = np.int32(0)
    c1 = np.int32(0)
    c2 = np.int32(0)
    c3 = np.int32(0)
    c4 = np.int32(0)
    c5 = np.int32(0)
    c6 = np.int32(0)
    nn = np.int32(0)
    for i in range(x.shape[0]):
        v = x[i]
        c0 += np.int32(v < t0)
        c1 += np.int32(v < t1)
        c2 += np.int32(v < t2)
        c3 += np.int32(v < t3)
        c4 += np.int32(v < t4)
        c5 += np.int32(v < t5)
        c6 += np.int32(v < t6)
        nn += np.int32(v != v)
    counts[0] = c0
    counts[1] = c1
    counts[2] = c2
    counts[3] = c3
    counts[4] = c4
    counts[5] = c5
    counts[6] = c6
    return np.int64(nn)


@njit(nogil=True, cache=True, inline="always")
def _bracket(t, counts, r, lo, hi, below, above):
    """The bracket of rank r among thresholds t (counts[k] = #(v < t[k])), inside [lo, hi) whose
    lower end has `below` values under it and upper end `above`: (lo, hi, below, above)."""
    k = 0
    while k < 7 and counts[k] <= r:
        k += 1
    if k > 0:
        lo = t[k - 1]
        below = counts[k - 1]
    if k < 7:
        hi = t[k]
        above = counts[k]
    return lo, hi, below, above


@njit(nogil=True, cache=True)
def _gather(x, lo, hi, top, buf):
    """The values v of x with lo <= v < hi (v <= hi when top; NaN never) into buf; how many.

    Branch-free: every value is stored and the count advances when it is kept (≈ 0.65 ns a value
    on this project's machine, whatever the share kept; a branch on the test cost 6–7 ns a value
    when 2 % were kept)."""
    w = 0
    if top:  # (two loops: a `top` flag tested inside the loop doubled its cost)
        for i in range(x.shape[0]):
            v = x[i]
            buf[w] = v
            w += (v >= lo) & (v <= hi)
    else:
        for i in range(x.shape[0]):
            v = x[i]
            buf[w] = v
            w += (v >= lo) & (v < hi)
    return w


@njit(nogil=True, cache=True)
def _rank_values(x, r1, r2, valid, t, counts, buf, buf2, samp):
    """Values at ranks r1 <= r2 (r2 <= r1 + 1) of the non-NaN values of x (valid of them), given the
    first-level thresholds t and their counts."""
    inf = x.dtype.type(np.inf)  # (the bracket's ends in the values' type: comparisons without conversion)
    lo, hi, below, above = _bracket(t, counts, r1, -inf, inf, 0, valid)
    if not (r2 < above):  # r1 and r2 straddle a threshold: one at a time (brackets taken first:
        # the calls below reuse t and counts)
        lo2, hi2, below2, above2 = _bracket(t, counts, r2, -inf, inf, 0, valid)
        v1, _ = _rank_values_in(x, r1, r1, lo, hi, below, above, t, counts, buf, buf2, samp)
        v2, _ = _rank_values_in(x, r2, r2, lo2, hi2, below2, above2, t, counts, buf, buf2, samp)
        return v1, v2
    return _rank_values_in(x, r1, r2, lo, hi, below, above, t, counts, buf, buf2, samp)


@njit(nogil=True, cache=True)
def _rank_values_in(x, r1, r2, lo, hi, below, above, t, counts, buf, buf2, samp):
    """Ranks r1 <= r2 (both in [below, above)) whose values lie in [lo, hi) ([lo, hi] when hi is +inf)."""
    inf = x.dtype.type(np.inf)
    if above - below > max(_GATHER, x.shape[0] // _NARROW) and lo > -inf and hi < inf:
        # second level: seven thresholds evenly spaced inside the bracket (float64 arithmetic, then
        # the block's type: monotone, so the counts still order the ranks)
        a = np.float64(lo)
        d = (np.float64(hi) - a) / 8.0
        for k in range(7):
            t[k] = a + d * (k + 1)
        _count7(x, t, counts)
        lo2, hi2, below2, above2 = _bracket(t, counts, r1, lo, hi, below, above)
        if r2 < above2:
            lo, hi, below, above = lo2, hi2, below2, above2
    m = _gather(x, lo, hi, hi == inf, buf)
    return _select(buf, buf2, m, r1 - below, r2 - below, samp)


@njit(nogil=True, cache=True)
def _column_median(x, buf, buf2, samp, t, counts):
    """The two middle values (pandas' median: their mean) of the non-NaN values of x; NaN, NaN if none."""
    n = x.shape[0]
    nan = np.nan
    if n <= _SMALL:
        m = 0
        for i in range(n):
            v = x[i]
            buf[m] = v
            m += v == v
        if m == 0:
            return nan, nan
        return _pick2(buf, m, (m - 1) // 2, m // 2)
    step = n // _SAMPLE
    s = 0
    for i in range(_SAMPLE):
        v = x[i * step + step // 2]
        samp[s] = v
        s += v == v
    if s < 8:  # mostly NaN: gather the values
        m = 0
        for i in range(n):
            v = x[i]
            buf[m] = v
            m += v == v
        if m == 0:
            return nan, nan
        return _select(buf, buf2, m, (m - 1) // 2, m // 2, samp)
    c = s // 2
    q = max(1, (_SPREAD * s) // _SAMPLE)
    _pick7(samp, s, c, q, t)
    nn = _count7(x, t, counts)
    valid = n - nn
    if valid == 0:
        return nan, nan
    return _rank_values(x, (valid - 1) // 2, valid // 2, valid, t, counts, buf, buf2, samp)


@njit(nogil=True, cache=True)
def column_medians(x, starts, stops, out, j):
    """out[r, j] = the float64 median of x[starts[r]:stops[r]] for every run r (x: one column,
    float32/float64, contiguous, e.g. the buffer Arrow decoded it into)."""
    n_runs = starts.shape[0]
    longest = 1
    for r in range(n_runs):
        longest = max(longest, stops[r] - starts[r])
    if longest >= 2**31:
        raise ValueError("a run of 2**31 values or more: the counting kernels count in 32 bits")
    buf = np.empty(longest, x.dtype)
    buf2 = np.empty(longest, x.dtype)
    samp = np.empty(_SAMPLE, x.dtype)
    t = np.empty(7, x.dtype)
    counts = np.empty(7, np.int64)
    for r in range(n_runs):
        v1, v2 = _column_median(x[starts[r]:stops[r]], buf, buf2, samp, t, counts)
        out[r, j] = (np.float64(v1) + np.float64(v2)) / 2


@njit(nogil=True, cache=True)
def column_sums(x, starts, stops, sums, counts, j):
    """NaN-skipping float64 sums and counts of x[starts[r]:stops[r]] into sums/counts[r, j] (x: one column)."""
    for r in range(starts.shape[0]):
        s = 0.0
        c = 0
        for i in range(starts[r], stops[r]):
            v = np.float64(x[i])
            if v == v:
                s += v
                c += 1
        sums[r, j] = s
        counts[r, j] = c


def _columns(data, floats: bool) -> list[np.ndarray]:
    """The 1-D contiguous columns of ``data``: a list of them as it is, or a 2-D block's (float32
    and float64 kept, anything else as float64 when ``floats``)."""
    if not isinstance(data, np.ndarray):
        return list(data)
    if floats and data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    return list(np.asfortranarray(data).T)  # column-major: each column contiguous (a copy only when it is not)


def medians(data, starts, stops) -> np.ndarray:
    """float64 (runs × columns) NaN-skipping medians of the row runs ``starts[r]:stops[r]`` of each
    column of ``data`` (a list of 1-D float32/float64 arrays, e.g. Arrow's decoded buffers, or a
    2-D block). The kernels release the GIL: threads may compute different columns at once."""
    columns = _columns(data, floats=True)
    starts, stops = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
    out = np.empty((len(starts), len(columns)), np.float64)
    for j, c in enumerate(columns):
        column_medians(c, starts, stops, out, j)
    return out


def sums_counts(data, starts, stops) -> tuple[np.ndarray, np.ndarray]:
    """float64 NaN-skipping sums and int64 counts (runs × columns) of the row runs of each column of
    ``data`` (as in :func:`medians`)."""
    columns = _columns(data, floats=False)
    starts, stops = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
    sums = np.empty((len(starts), len(columns)), np.float64)
    counts = np.empty((len(starts), len(columns)), np.int64)
    for j, c in enumerate(columns):
        column_sums(c, starts, stops, sums, counts, j)
    return sums, counts
