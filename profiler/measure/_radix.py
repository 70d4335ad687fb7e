"""Linear-time radix sorting of float32 values: the one LSD radix sort of the measure kernels.

:func:`radix_sort_u32` sorts uint32 keys (stable, three 11-bit counting passes) carrying a payload
along. Float32 values become such keys by :func:`_f32_key` (an order-preserving map of their bits).
Two users:

* :func:`sort_float32_by_label` (Intensity's quartiles and MAD): each label's values sorted, the
  same values in the same order as ``np.sort`` applied to each label's values separately;
* :func:`value_order_f32` / :func:`dense_codes_f32` (Correlation off the 16-bit grid; a sort of
  unique uint64 keys by ``np.sort``, faster here than the radix sort with a payload): the pixels
  in value order and the dense rank of every pixel's value among the image's distinct values (RWC
  ranks; the value order also groups the pixels for the Costes threshold search).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _f32_key(u):  # pragma: no cover - numba
    """Order-preserving uint32 key of a float32 given as its bits: negatives flipped, positives with
    the sign bit set (the order of ``np.sort`` on float32, NaN of either sign aside)."""
    return ~u if u & np.uint32(0x80000000) else u | np.uint32(0x80000000)


@nb.njit(cache=True, nogil=True)
def radix_sort_u32(a, payload):  # pragma: no cover - numba
    """Stable LSD radix sort of the uint32 keys ``a``, ``payload`` (same length) moved along.

    Three 11-bit counting passes (the three digit histograms are counted in one read of the keys);
    a pass whose digit is the same for every key is skipped. The inputs are used as work buffers
    (their contents are undefined afterwards). Returns the sorted (keys, payload).
    """
    m = a.shape[0]
    b = np.empty(m, np.uint32)
    pb = np.empty_like(payload)
    cnt = np.zeros((3, 2049), np.int64)
    for t in range(m):
        u = a[t]
        cnt[0, (u & np.uint32(2047)) + 1] += 1
        cnt[1, ((u >> np.uint32(11)) & np.uint32(2047)) + 1] += 1
        cnt[2, (u >> np.uint32(22)) + 1] += 1
    for p in range(3):
        sh = np.uint32(11 * p)
        c = cnt[p]
        if c.max() == m:
            continue
        for i in range(2048):
            c[i + 1] += c[i]
        for t in range(m):
            d = (a[t] >> sh) & np.uint32(2047)
            q = c[d]
            b[q] = a[t]
            pb[q] = payload[t]
            c[d] = q + 1
        a, b = b, a
        payload, pb = pb, payload
    return a, payload


@nb.njit(cache=True)
def _radix_float32_by_label(lab, bits, n):  # pragma: no cover - numba
    """Float32 values (given as their uint32 bits) sorted by (label, value): by value with
    :func:`radix_sort_u32`, then stably by label (one counting pass). Returns the sorted float32 bits.
    """
    m = lab.size
    a = np.empty(m, np.uint32)
    la = np.empty(m, np.int64)
    for t in range(m):
        a[t] = _f32_key(bits[t])
        la[t] = lab[t]
    a, la = radix_sort_u32(a, la)
    pos = np.zeros(n + 2, np.int64)
    for t in range(m):
        pos[la[t] + 1] += 1
    for k in range(n + 1):
        pos[k + 1] += pos[k]
    out = np.empty(m, np.uint32)
    for t in range(m):
        k = la[t]
        u = a[t]
        out[pos[k]] = u & np.uint32(0x7FFFFFFF) if u & np.uint32(0x80000000) else ~u
        pos[k] += 1
    return out


def sort_float32_by_label(lab: np.ndarray, values32: np.ndarray) -> np.ndarray:
    """float32 values sorted by (label, value) → float64 (labels 0..max(lab)). Same values and
    order as sorting each label's values separately with ``np.sort``; one linear-time radix sort
    for all objects instead of a comparison sort."""
    lab = np.ascontiguousarray(lab)
    n = int(lab.max()) if lab.size else 0
    bits = np.ascontiguousarray(values32, np.float32).view(np.uint32)
    return _radix_float32_by_label(lab, bits, n).view(np.float32).astype(np.float64)


@nb.njit(cache=True, nogil=True)
def _value_keys(bits: np.ndarray):  # pragma: no cover - numba
    """(ok, keys): per pixel the uint64 key (order-preserving key of its float32 value, −0.0 = +0.0)
    << 32 | position; ok False (keys empty) when a value is NaN."""
    m = bits.shape[0]
    keys = np.empty(m, np.uint64)
    for t in range(m):
        u = bits[t]
        if (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000) and (u & np.uint32(0x007FFFFF)) != 0:
            return False, keys[:0]
        if u == np.uint32(0x80000000):  # -0.0 equals +0.0
            u = np.uint32(0)
        keys[t] = (np.uint64(_f32_key(u)) << np.uint64(32)) | np.uint64(t)
    return True, keys


@nb.njit(cache=True, nogil=True)
def _value_codes(keys: np.ndarray, bits: np.ndarray):  # pragma: no cover - numba
    """From the sorted keys of :func:`_value_keys`: codes, order, sorted bits."""
    m = keys.shape[0]
    codes = np.empty(m, np.int32)
    order = np.empty(m, np.int32)
    vals = np.empty(m, np.uint32)
    code = -1
    prev = np.uint64(0)
    for t in range(m):
        k = keys[t]
        hi = k >> np.uint64(32)
        if t == 0 or hi != prev:
            code += 1
            prev = hi
        p = np.int64(k & np.uint64(0xFFFFFFFF))
        codes[p] = code
        order[t] = p
        u = np.uint32(hi)  # the key's value: the pixel's own bits, but for a zero (its sign is kept)
        if u == np.uint32(0x80000000):
            vals[t] = bits[p]
        else:
            vals[t] = u & np.uint32(0x7FFFFFFF) if u & np.uint32(0x80000000) else ~u
    return codes, order, vals


def value_order_f32(bits: np.ndarray):
    """The pixels of a float32 image (given as its uint32 bits) in value order: a sort of the
    uint64 keys (value key << 32 | position), all distinct, so the order is the stable one (equal
    values in raster order; −0.0 = +0.0) whatever algorithm ``np.sort`` uses. Returns
    (ok, codes, order, sorted): ``codes`` the dense rank of each value among the distinct values,
    ``order`` the positions (int32) in value order, ``sorted`` the values in that order (float32,
    each pixel's own bits). ok is False when a value is NaN (the other outputs are then empty)."""
    bits = np.ascontiguousarray(bits, dtype=np.uint32)
    if bits.shape[0] >= 2 ** 31:
        raise ValueError("value_order_f32: more than 2**31 - 1 values")
    ok, keys = _value_keys(bits)
    if not ok:
        return False, np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32)
    keys.sort()
    codes, order, vals = _value_codes(keys, bits)
    return True, codes, order, vals.view(np.float32)


def dense_codes_f32(bits: np.ndarray):
    """Dense codes of float32 values given as their uint32 bits: code = rank of the value among the
    distinct values (−0.0 = +0.0), from :func:`value_order_f32`. Returns (ok, codes); ok is False
    when a value is NaN (the caller then ranks as np.unique does)."""
    ok, codes, order, vals = value_order_f32(bits)
    return ok, codes
