"""numba kernels over pixels grouped by label, and the one-pass shape scan.

Everything here works on a whole label image at once (one pass over the pixels, or one pass over
pixels grouped by label); no Python loop over objects. Pixel coordinates are (i, j) = (row,
column) of the pixel centre.

* grouping: :func:`group_by_label` (counting sort of pixel indices by label), :func:`label_starts`,
  :func:`sorted_by_label`; :func:`label_pixels` (the labelled pixels and counts in one scan) and
  :func:`group_pixels_by_label` (them regrouped by label), behind :class:`_util.LabelContext`;
* per-label statistics of sorted values: :func:`sorted_group_stats`, and :func:`radii_by_label`
  (max / mean / median of distance-transform values, by counting exact squared distances);
* :func:`pixel_scan`: area, bounding box, perimeter and Euler number of every object in one pass.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def run_end(labels: np.ndarray, i: int, j: int) -> int:  # pragma: no cover - numba
    """Last column of the horizontal run of equal labels in row ``i`` that starts at column ``j``
    (the run-length scan shared by the kernels that walk a label image run by run)."""
    w = labels.shape[1]
    lab = labels[i, j]
    e = j
    while e + 1 < w and labels[i, e + 1] == lab:
        e += 1
    return e


@nb.njit(cache=True)
def group_by_label(lab: np.ndarray, n: int):
    """Counting sort of pixel indices by label: (order, starts) with starts of length n + 2.

    Pixels of label k are order[starts[k]:starts[k + 1]], in their original order.
    """
    counts = np.zeros(n + 2, np.int64)
    for k in lab:
        counts[k + 1] += 1
    starts = np.cumsum(counts)
    pos = starts.copy()
    order = np.empty(lab.size, np.int64)
    for idx in range(lab.size):
        k = lab[idx]
        order[pos[k]] = idx
        pos[k] += 1
    return order, starts


@nb.njit(cache=True)
def sorted_by_label(lab: np.ndarray, values: np.ndarray, n: int):
    """Values sorted within each label: (sorted_values, starts)."""
    order, starts = group_by_label(lab, n)
    out = np.empty(values.size, np.float64)
    for idx in range(order.size):
        out[idx] = values[order[idx]]
    for k in range(1, n + 1):
        a, b = starts[k], starts[k + 1]
        if b - a > 1:
            out[a:b] = np.sort(out[a:b])
    return out, starts


def label_starts(lab: np.ndarray, n: int) -> np.ndarray:
    """starts (n + 2,) of each label's block in a by-label sorted pixel list."""
    starts = np.zeros(n + 2, np.int64)
    np.cumsum(np.bincount(lab, minlength=n + 1)[:n + 1], out=starts[1:])
    return starts


@nb.njit(cache=True)
def sorted_group_stats(vals: np.ndarray, starts: np.ndarray, n: int):
    """max, mean and median (mean of the two middle values) of each label's sorted values;
    NaN for labels without values.  Rows 1..n of arrays of length n + 1."""
    mx = np.full(n + 1, np.nan)
    mean = np.full(n + 1, np.nan)
    med = np.full(n + 1, np.nan)
    for k in range(1, n + 1):
        a, b = starts[k], starts[k + 1]
        c = b - a
        if c == 0:
            continue
        mx[k] = vals[b - 1]
        s = 0.0
        for t in range(a, b):
            s += vals[t]
        mean[k] = s / c
        lo = a + (c - 1) // 2
        hi = a + c // 2
        med[k] = (vals[lo] + vals[hi]) / 2.0
    return mx, mean, med


@nb.njit(cache=True)
def _squares_exact(d):
    """d² as integers when every d is exactly √(integer < 2³¹) (exact distance transforms);
    (squares, True) or (_, False) when some d is not."""
    out = np.empty(d.size, np.int64)
    for p in range(d.size):
        x = d[p]
        if not (x >= 0.0 and x < 46340.0):
            return out, False
        q = np.int64(round(x * x))
        if math.sqrt(float(q)) != x:
            return out, False
        out[p] = q
    return out, True


@nb.njit(cache=True)
def radii_from_squares(lab, sq, n):
    """max, mean and median (mean of the two middle values) per label of the distances √sq,
    exactly as :func:`sorted_group_stats` gives them on the sorted distances (the mean sums the
    distances in ascending order), by counting each label's squared distances instead of sorting.
    Rows 1..n of arrays of length n + 1; NaN for labels without pixels."""
    cnt = np.zeros(n + 1, np.int64)
    top = np.zeros(n + 1, np.int64)
    for p in range(lab.size):
        k = lab[p]
        cnt[k] += 1
        if sq[p] > top[k]:
            top[k] = sq[p]
    off = np.zeros(n + 2, np.int64)
    for k in range(n + 1):
        off[k + 1] = off[k] + (top[k] + 1 if cnt[k] > 0 else 0)
    hist = np.zeros(off[n + 1], np.int64)
    for p in range(lab.size):
        hist[off[lab[p]] + sq[p]] += 1
    mx = np.full(n + 1, np.nan)
    mean = np.full(n + 1, np.nan)
    med = np.full(n + 1, np.nan)
    for k in range(1, n + 1):
        c = cnt[k]
        if c == 0:
            continue
        lo = (c - 1) // 2
        hi = c // 2
        v_lo = 0.0
        v_hi = 0.0
        s = 0.0
        seen = 0
        for v in range(top[k] + 1):
            h = hist[off[k] + v]
            if h == 0:
                continue
            x = math.sqrt(float(v))
            for _ in range(h):
                s += x
            if seen <= lo < seen + h:
                v_lo = x
            if seen <= hi < seen + h:
                v_hi = x
            seen += h
        mx[k] = math.sqrt(float(top[k]))
        mean[k] = s / c
        med[k] = (v_lo + v_hi) / 2.0
    return mx, mean, med


def radii_by_label(lab: np.ndarray, dist: np.ndarray, n: int):
    """(max, mean, median) distance per label 1..n (arrays of length n + 1, NaN where a label has no
    pixels): counting squared distances when they are exact, else sorting each label's distances."""
    sq, exact = _squares_exact(np.ascontiguousarray(dist, np.float64))
    if exact:
        return radii_from_squares(np.ascontiguousarray(lab, np.int64), sq, n)
    d_sorted, d_starts = sorted_by_label(lab, dist, n)
    return sorted_group_stats(d_sorted, d_starts, n)


@nb.njit(cache=True, inline="always")
def _perimeter_code(labels, border, i, j, lab, h, w):  # pragma: no cover - numba
    """scikit-image's perimeter code of the border pixel (i, j) of ``lab`` (1 + 2 per edge
    neighbour + 10 per corner neighbour on the border)."""
    code = 1
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == 0 and dj == 0:
                continue
            a = i + di
            b = j + dj
            if a < 0 or a >= h or b < 0 or b >= w:
                continue
            if border[a, b] and labels[a, b] == lab:
                code += 10 if (di != 0 and dj != 0) else 2
    return code


@nb.njit(cache=True)
def pixel_scan(labels: np.ndarray, n: int):
    """One pass over the image: area, bbox, perimeter (scikit-image, 4-neighbourhood) and
    Euler number (8-connectivity) of every object 1..n.

    Returns area (n+1,), bbox (n+1, 4) inclusive, perimeter (n+1,), euler (n+1,).
    """
    h, w = labels.shape
    area = np.zeros(n + 1, np.int64)
    bbox = np.empty((n + 1, 4), np.int64)
    bbox[:, 0] = h
    bbox[:, 1] = w
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    border = np.zeros((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            area[lab] += 1
            if i < bbox[lab, 0]:
                bbox[lab, 0] = i
            if j < bbox[lab, 1]:
                bbox[lab, 1] = j
            if i > bbox[lab, 2]:
                bbox[lab, 2] = i
            if j > bbox[lab, 3]:
                bbox[lab, 3] = j
            if (i == 0 or labels[i - 1, j] != lab or i == h - 1 or labels[i + 1, j] != lab
                    or j == 0 or labels[i, j - 1] != lab or j == w - 1 or labels[i, j + 1] != lab):
                border[i, j] = True
    weights = np.zeros(50)
    for c in (5, 7, 15, 17, 25, 27):
        weights[c] = 1.0
    weights[21] = math.sqrt(2.0)
    weights[33] = math.sqrt(2.0)
    weights[13] = (1.0 + math.sqrt(2.0)) / 2.0
    weights[23] = (1.0 + math.sqrt(2.0)) / 2.0
    perim = np.zeros(n + 1)
    # each object's border pixels in raster order (its bounding box scanned row by row: the same
    # additions in the same order as a scan of the whole image)
    for lab in range(1, n + 1):
        if area[lab] == 0:
            continue
        for i in range(bbox[lab, 0], bbox[lab, 2] + 1):
            for j in range(bbox[lab, 1], bbox[lab, 3] + 1):
                if border[i, j] and labels[i, j] == lab:
                    code = _perimeter_code(labels, border, i, j, lab, h, w)
                    if code < 50:
                        perim[lab] += weights[code]
    # Euler number, 8-connectivity: (Q1 - Q3 - 2 QD) / 4 over 2x2 windows of the zero-padded image;
    # the windows holding a pixel of object k have their top-left corner in k's bounding box grown
    # by one row and column up and left, so only those are visited (integer counts: any order)
    eul = np.zeros(n + 1, np.int64)
    for lab in range(1, n + 1):
        if area[lab] == 0:
            continue
        for i in range(bbox[lab, 0] - 1, bbox[lab, 2] + 1):
            for j in range(bbox[lab, 1] - 1, bbox[lab, 3] + 1):
                b0 = i >= 0 and j >= 0 and labels[i, j] == lab
                b1 = i >= 0 and j + 1 < w and labels[i, j + 1] == lab
                b2 = i + 1 < h and j >= 0 and labels[i + 1, j] == lab
                b3 = i + 1 < h and j + 1 < w and labels[i + 1, j + 1] == lab
                q = b0 + b1 + b2 + b3
                if q == 1:
                    eul[lab] += 1
                elif q == 3:
                    eul[lab] -= 1
                elif q == 2 and ((b0 and b3) or (b1 and b2)):
                    eul[lab] -= 2
    return area, bbox, perim, eul


@nb.njit(cache=True, nogil=True)
def label_pixels(flat: np.ndarray, n: int):  # pragma: no cover - numba
    """Flat indices (int64) and labels (int64) of the pixels with 0 < label ≤ n, in raster order,
    and the pixel count of labels 0..n (int64, entry 0 is 0): one counting pass and one filling
    pass, no temporaries of the image's size."""
    counts = np.zeros(n + 1, np.int64)
    for k in range(flat.shape[0]):
        v = flat[k]
        if v > 0 and v <= n:
            counts[v] += 1
    m = 0
    for v in range(n + 1):
        m += counts[v]
    idx = np.empty(m, np.int64)
    lab = np.empty(m, np.int64)
    t = 0
    for k in range(flat.shape[0]):
        v = flat[k]
        if v > 0 and v <= n:
            idx[t] = k
            lab[t] = v
            t += 1
    return idx, lab, counts


@nb.njit(cache=True, nogil=True)
def group_pixels_by_label(idx: np.ndarray, lab: np.ndarray, counts: np.ndarray):  # pragma: no cover - numba
    """(idx, lab) of pixels in raster order regrouped by label (raster order within each label; a
    stable counting sort) and the start of each label 1..n in them (length n + 1)."""
    n = counts.shape[0] - 1
    starts = np.zeros(n + 1, np.int64)
    for o in range(n):
        starts[o + 1] = starts[o] + counts[o + 1]
    fill = starts[:n].copy()
    gi = np.empty(idx.shape[0], np.int64)
    gl = np.empty(idx.shape[0], np.int64)
    for t in range(idx.shape[0]):
        v = lab[t]
        p = fill[v - 1]
        gi[p] = idx[t]
        gl[p] = v
        fill[v - 1] = p + 1
    return gi, gl, starts
