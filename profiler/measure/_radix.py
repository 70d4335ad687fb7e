"""Linear-time radix sorting of float32 values: the one LSD radix sort of the measure kernels.

:func:`radix_sort_u32` sorts uint32 keys (stable, three 11-bit counting passes) carrying a payload
along. Float32 values become such keys by :func:`_f32_key` (an order-preserving map of their bits).
Two users:

* :func:`sort_float32_by_label` (Intensity's quartiles and MAD): each label's values sorted, the
  same values in the same order as ``np.sort`` applied to each label's values separately;
* :func:`dense_codes_f32` (Correlation's RWC ranks off the 16-bit grid): the dense rank of every
  pixel's value among the image's distinct values.
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

    Three 11-bit counting passes; a pass whose digit is the same for every key is skipped. The
    inputs are used as work buffers (their contents are undefined afterwards). Returns the sorted
    (keys, payload).
    """
    m = a.shape[0]
    b = np.empty(m, np.uint32)
    pb = np.empty_like(payload)
    cnt = np.empty(2049, np.int64)
    for sh in (0, 11, 22):
        cnt[:] = 0
        for t in range(m):
            cnt[((a[t] >> np.uint32(sh)) & np.uint32(2047)) + 1] += 1
        if cnt.max() == m:
            continue
        for i in range(2048):
            cnt[i + 1] += cnt[i]
        for t in range(m):
            d = (a[t] >> np.uint32(sh)) & np.uint32(2047)
            q = cnt[d]
            b[q] = a[t]
            pb[q] = payload[t]
            cnt[d] = q + 1
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
def dense_codes_f32(bits: np.ndarray):  # pragma: no cover - numba
    """Dense codes of float32 values given as their uint32 bits: code = rank of the value among the
    distinct values (−0.0 = +0.0), by :func:`radix_sort_u32` of the values with their positions.
    Returns (ok, codes); ok is False when a value is NaN (the caller then ranks as np.unique does)."""
    m = bits.shape[0]
    a = np.empty(m, np.uint32)
    ia = np.empty(m, np.int32)
    for t in range(m):
        u = bits[t]
        if (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000) and (u & np.uint32(0x007FFFFF)) != 0:
            return False, np.empty(0, np.int32)
        if u == np.uint32(0x80000000):  # -0.0 equals +0.0
            u = np.uint32(0)
        a[t] = _f32_key(u)
        ia[t] = t
    a, ia = radix_sort_u32(a, ia)
    codes = np.empty(m, np.int32)
    code = -1
    for t in range(m):
        if t == 0 or a[t] != a[t - 1]:
            code += 1
        codes[ia[t]] = code
    return True, codes
