"""Numba kernels of :mod:`profiler.aggregate_stream`: exact NaN-skipping per-column medians and means
of row runs of a column-major float block.

The median is a radix select on the float bit patterns: each float is mapped to an unsigned key
whose integer order is the float order (negative floats: all bits inverted; others: sign bit set),
NaN is skipped. A histogram of 2,048 bins over the keys' range finds the bin holding the middle
rank(s); only that bin's keys are kept and the range narrows by 11 bits per level, so a column
costs about three passes over its values whatever their distribution (ties and heavy tails
included); at most 48 candidates left are insertion-sorted. Both middle values are returned as
keys, so an even count gives the mean of the two middle values (pandas' median) — exact, with no
rounding anywhere but that final mean, computed by the caller in float64.

The key width follows the block: float32 blocks use uint32 keys, float64 blocks uint64 keys
(``consts`` carries the width's constants, so one compiled function serves each width). The
kernels are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

NBINS = 2048  # 11 bits per level
_DIGIT = 11
_SMALL = 48


def constants(dtype: np.dtype) -> np.ndarray:
    """[sign bit, abs mask, +inf bits, a NaN's bits] for float32 (uint32) or float64 (uint64)."""
    if np.dtype(dtype) == np.float32:
        return np.array([0x80000000, 0x7FFFFFFF, 0x7F800000, 0x7FC00000], np.uint32)
    return np.array([1 << 63, (1 << 63) - 1, 0x7FF0000000000000, 0x7FF8000000000000], np.uint64)


@njit(nogil=True, cache=True, inline="always")
def _as_key(tmp, v):
    """v (an int) in the key type (numba would make uint64 + int64 a float64)."""
    tmp[0] = v
    return tmp[0]


@njit(nogil=True, cache=True)
def _select(keys, cnt, mn, mx, r1, r2, hist):
    """Keys at ranks r1 <= r2 (r2 - r1 <= 1) of keys[:cnt] whose values lie in [mn, mx]; keys is reused."""
    tmp = np.empty(1, keys.dtype)
    zero = _as_key(tmp, 0)
    one = _as_key(tmp, 1)
    while True:
        if mn == mx:
            return mn, mn
        if cnt <= _SMALL:
            for a in range(1, cnt):
                v = keys[a]
                c = a - 1
                while c >= 0 and keys[c] > v:
                    keys[c + 1] = keys[c]
                    c -= 1
                keys[c + 1] = v
            return keys[r1], keys[r2]
        span = mx - mn
        bits = 0
        while span:
            span >>= one
            bits += 1
        shift = _as_key(tmp, bits - _DIGIT) if bits > _DIGIT else zero
        for b in range(NBINS):
            hist[b] = 0
        for i in range(cnt):
            hist[(keys[i] - mn) >> shift] += 1
        acc = 0
        b1 = -1
        b2 = -1
        p1 = 0
        for b in range(NBINS):
            h = hist[b]
            if b1 < 0 and acc + h > r1:
                b1 = b
                p1 = acc
            if acc + h > r2:
                b2 = b
                break
            acc += h
        lo1 = mn + (_as_key(tmp, b1) << shift)
        lo2 = mn + (_as_key(tmp, b2) << shift)
        width = (one << shift) - one
        if shift == zero:
            return lo1, lo2
        if b1 != b2:  # r1 is the largest key of bin b1, r2 the smallest of bin b2
            hi1 = lo1 + width
            k1 = zero
            k2 = ~zero
            for i in range(cnt):
                kk = keys[i]
                if kk <= hi1:
                    if kk >= lo1 and kk > k1:
                        k1 = kk
                elif kk >= lo2 and kk < k2:
                    k2 = kk
            return k1, k2
        hi = lo1 + width
        w = 0
        for i in range(cnt):  # keep bin b1's keys (branch-free)
            kk = keys[i]
            keys[w] = kk
            w += (kk >= lo1) & (kk <= hi)
        cnt = w
        r1 -= p1
        r2 -= p1
        # the candidates' actual range (a small pass: usually few are left); equal keys end here
        mn = keys[0]
        mx = keys[0]
        for i in range(1, cnt):
            kk = keys[i]
            if kk < mn:
                mn = kk
            if kk > mx:
                mx = kk


@njit(nogil=True, cache=True)
def _column_median(u, start, stop, keys, hist, consts, out, r, j):
    sign = consts[0]
    absmask = consts[1]
    inf = consts[2]
    m = 0
    mn = ~(sign - sign)
    mx = sign - sign
    for i in range(start, stop):
        b = u[i, j]
        if (b & absmask) > inf:  # NaN: skipped
            continue
        k = ~b if b & sign else b | sign
        keys[m] = k
        m += 1
        if k < mn:
            mn = k
        if k > mx:
            mx = k
    if m == 0:
        out[r, j, 0] = consts[3]
        out[r, j, 1] = consts[3]
        return
    k1, k2 = _select(keys, m, mn, mx, (m - 1) // 2, m // 2, hist)
    out[r, j, 0] = (k1 & absmask) if k1 & sign else ~k1
    out[r, j, 1] = (k2 & absmask) if k2 & sign else ~k2


@njit(nogil=True, cache=True)
def run_medians(u, starts, stops, consts, out, c0, c1):
    """Bit patterns of the two middle values of u[starts[r]:stops[r], j] for every run r and column
    c0 <= j < c1 (threads share a block by taking disjoint column ranges; the GIL is released).

    u: the block's float bits viewed as uint32/uint64 (rows × columns, column-major for speed);
    out: (runs, columns, 2) of the same uint type; an all-NaN run gives NaN bits.
    """
    n_runs = starts.shape[0]
    longest = 1
    for r in range(n_runs):
        longest = max(longest, stops[r] - starts[r])
    keys = np.empty(longest, u.dtype)
    hist = np.empty(NBINS, np.int32)
    for j in range(c0, c1):
        for r in range(n_runs):
            _column_median(u, starts[r], stops[r], keys, hist, consts, out, r, j)


@njit(nogil=True, cache=True)
def run_sums(x, starts, stops, sums, counts, c0, c1):
    """NaN-skipping float64 sums and counts of x[starts[r]:stops[r], j] into sums/counts[r, j], c0 <= j < c1."""
    n_runs = starts.shape[0]
    for j in range(c0, c1):
        for r in range(n_runs):
            s = 0.0
            c = 0
            for i in range(starts[r], stops[r]):
                v = np.float64(x[i, j])
                if v == v:
                    s += v
                    c += 1
            sums[r, j] = s
            counts[r, j] = c


def _run(kernel, n_cols: int, args: tuple, pool, parts: int) -> None:
    """kernel(*args, c0, c1) over column ranges, on the thread pool when there is one."""
    if pool is None or parts <= 1 or n_cols < 2:
        kernel(*args, 0, n_cols)
        return
    edges = np.linspace(0, n_cols, min(parts, n_cols) + 1).astype(np.int64)
    futures = [pool.submit(kernel, *args, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    for f in futures:
        f.result()


def medians(block: np.ndarray, starts: np.ndarray, stops: np.ndarray, *, pool=None, parts: int = 1) -> np.ndarray:
    """float64 (runs × columns) NaN-skipping medians of the row runs of a float32/float64 block
    (``pool``: a thread pool that computes ``parts`` column ranges at once)."""
    block = np.asarray(block)
    utype = np.uint32 if block.dtype == np.float32 else np.uint64
    out = np.empty((len(starts), block.shape[1], 2), utype)
    _run(run_medians, block.shape[1], (block.view(utype), np.asarray(starts, np.int64), np.asarray(stops, np.int64),
                                       constants(block.dtype), out), pool, parts)
    mid = out.view(block.dtype).astype(np.float64)
    return (mid[..., 0] + mid[..., 1]) / 2


def sums_counts(block: np.ndarray, starts: np.ndarray, stops: np.ndarray, *, pool=None,
                parts: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """float64 NaN-skipping sums and int64 counts (runs × columns) of the row runs of a block."""
    sums = np.empty((len(starts), block.shape[1]), np.float64)
    counts = np.empty((len(starts), block.shape[1]), np.int64)
    _run(run_sums, block.shape[1], (block, np.asarray(starts, np.int64), np.asarray(stops, np.int64), sums, counts),
         pool, parts)
    return sums, counts
