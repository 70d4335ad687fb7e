"""Linear-time radix sorting of float32 values (within labels).

:func:`sort_float32_by_label` gives the same values in the same order as ``np.sort`` applied to
each label's values separately, by one LSD radix sort over all objects.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _radix_float32_by_label(lab, bits, n):
    """LSD radix sort of float32 values (given as their uint32 bits) by (label, value).

    The float bits are mapped to order-preserving uint32 keys (negatives flipped, positives with
    the sign bit set: the order of ``np.sort`` on float32, NaN of either sign aside), sorted by
    three stable 11-bit counting passes (a pass whose digit is the same for every value is
    skipped), then stably by label. Returns the sorted float32 bits.
    """
    m = lab.size
    a = np.empty(m, np.uint32)
    la = np.empty(m, np.int64)
    for t in range(m):
        u = bits[t]
        a[t] = ~u if u & np.uint32(0x80000000) else u | np.uint32(0x80000000)
        la[t] = lab[t]
    b = np.empty(m, np.uint32)
    lb = np.empty(m, np.int64)
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
            lb[q] = la[t]
            cnt[d] = q + 1
        a, b = b, a
        la, lb = lb, la
    pos = np.zeros(n + 2, np.int64)
    for t in range(m):
        pos[la[t] + 1] += 1
    for k in range(n + 1):
        pos[k + 1] += pos[k]
    for t in range(m):
        k = la[t]
        u = a[t]
        b[pos[k]] = u & np.uint32(0x7FFFFFFF) if u & np.uint32(0x80000000) else ~u
        pos[k] += 1
    return b


def sort_float32_by_label(lab: np.ndarray, values32: np.ndarray) -> np.ndarray:
    """float32 values sorted by (label, value) → float64 (labels 0..max(lab)). Same values and
    order as sorting each label's values separately with ``np.sort``; one linear-time radix sort
    for all objects instead of a comparison sort."""
    lab = np.ascontiguousarray(lab)
    n = int(lab.max()) if lab.size else 0
    bits = np.ascontiguousarray(values32, np.float32).view(np.uint32)
    return _radix_float32_by_label(lab, bits, n).view(np.float32).astype(np.float64)
