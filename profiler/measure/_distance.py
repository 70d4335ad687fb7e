"""numba distance transforms on a whole label image (CellProfiler 5's conventions).

* a *label-wise* distance transform measures, for a pixel of object k, the Euclidean distance to
  the nearest pixel that is not k (other objects count as background): :func:`label_edt` (exact,
  Felzenszwalb–Huttenlocher per row) and :func:`edt_with_border` (the variant where the outside
  of the image is background, derived from the other one);
* :func:`geodesic_from_centers`: the geodesic (8-connected) distance from each object's centre
  inside the object, as CellProfiler's ``propagate`` with a flat image.

Pixel coordinates are (i, j) = (row, column) of the pixel centre.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from profiler.measure._labels import run_end

_INF = np.inf


@nb.njit(cache=True)
def _edt_1d(f, sites_pos, nsites, out, j0, j1, v, z, fv):
    # Felzenszwalb–Huttenlocher lower envelope of parabolas (pos, f) evaluated at j0..j1-1.
    k = 0
    if nsites == 0:
        for j in range(j0, j1):
            out[j] = _INF
        return
    v[0] = sites_pos[0]
    fv[0] = f[0]
    z[0] = -_INF
    z[1] = _INF
    for q in range(1, nsites):
        q_pos = sites_pos[q]
        fq = f[q]
        s = ((fq + q_pos * q_pos) - (fv[k] + v[k] * v[k])) / (2.0 * q_pos - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((fq + q_pos * q_pos) - (fv[k] + v[k] * v[k])) / (2.0 * q_pos - 2.0 * v[k])
        k += 1
        v[k] = q_pos
        fv[k] = fq
        z[k] = s
        z[k + 1] = _INF
    k = 0
    for j in range(j0, j1):
        while z[k + 1] < j:
            k += 1
        d = j - v[k]
        out[j] = d * d + fv[k]


@nb.njit(cache=True)
def label_edt(labels: np.ndarray, border_is_background: bool) -> np.ndarray:
    """Exact Euclidean distance from each labelled pixel to the nearest pixel of another label.

    ``border_is_background``: pixels outside the image count as background (CellProfiler's
    radius features pad each object by one pixel); otherwise only pixels inside the image do
    (CellProfiler's ``distance_to_edge`` used by MeasureObjectIntensityDistribution).
    Returns float64 distances, 0 on background, inf for an object that has no background at all.
    """
    h, w = labels.shape
    # phase 1: vertical distance to a different label within the column, as min(distance to the
    # run's top, distance to its bottom), in two row-major passes (cache-friendly)
    g = np.empty((h, w), np.float64)
    edge = 1.0 if border_is_background else _INF
    for j in range(w):
        g[0, j] = 0.0 if labels[0, j] == 0 else edge
    for i in range(1, h):
        for j in range(w):
            lab = labels[i, j]
            if lab == 0:
                g[i, j] = 0.0
            elif labels[i - 1, j] != lab:
                g[i, j] = 1.0
            else:
                g[i, j] = g[i - 1, j] + 1.0
    for j in range(w):
        if labels[h - 1, j] != 0 and edge < g[h - 1, j]:
            g[h - 1, j] = edge
    below = np.empty(w, np.float64)
    for j in range(w):
        below[j] = edge
    for i in range(h - 2, -1, -1):
        for j in range(w):
            lab = labels[i, j]
            if lab == 0:
                below[j] = 0.0
                continue
            if labels[i + 1, j] != lab:
                below[j] = 1.0
            else:
                below[j] = below[j] + 1.0
            if below[j] < g[i, j]:
                g[i, j] = below[j]
    out = np.zeros((h, w), np.float64)
    f = np.empty(w + 2, np.float64)
    pos = np.empty(w + 2, np.float64)
    v = np.empty(w + 2, np.float64)
    z = np.empty(w + 3, np.float64)
    fv = np.empty(w + 2, np.float64)
    row = np.empty(w, np.float64)
    for i in range(h):
        j = 0
        while j < w:
            lab = labels[i, j]
            e = run_end(labels, i, j)
            if lab != 0:
                ns = 0
                if j > 0 or border_is_background:
                    pos[ns] = j - 1.0
                    f[ns] = 0.0
                    ns += 1
                for c in range(j, e + 1):
                    gc = g[i, c]
                    if gc < _INF:
                        pos[ns] = c
                        f[ns] = gc * gc
                        ns += 1
                if e < w - 1 or border_is_background:
                    pos[ns] = e + 1.0
                    f[ns] = 0.0
                    ns += 1
                _edt_1d(f, pos, ns, row, j, e + 1, v, z, fv)
                for c in range(j, e + 1):
                    out[i, c] = math.sqrt(row[c])
            j = e + 1
    return out


@nb.njit(cache=True)
def edt_with_border(d_inside: np.ndarray) -> np.ndarray:
    """``label_edt(labels, True)`` from ``label_edt(labels, False)``: the nearest pixel outside the
    image lies straight across the nearest border, so the distance becomes
    min(d, i + 1, h − i, j + 1, w − j) — the same float64 values (√ of the smaller integer square
    is the smaller root; background stays 0, an object without background gets its border
    distance instead of inf)."""
    h, w = d_inside.shape
    out = np.empty((h, w), np.float64)
    for i in range(h):
        di = min(i + 1, h - i)
        for j in range(w):
            b = float(min(di, j + 1, w - j))
            x = d_inside[i, j]
            out[i, j] = x if x < b else b
    return out


@nb.njit(cache=True)
def geodesic_from_centers(labels: np.ndarray, ci: np.ndarray, cj: np.ndarray, n: int):
    """Geodesic (8-connected, steps 1 and √2) distance from each object's centre pixel,
    staying inside the object (CellProfiler's ``propagate`` with a flat image).
    Pixels not reached get -1.

    Dijkstra with a bucket queue of unit-width buckets (Dial): every step is ≥ 1, so a pixel
    popped from bucket ⌊d⌋ cannot be improved by any pixel of the same bucket, and the result
    is the same as a binary-heap Dijkstra bit for bit (each distance is the minimum over the
    neighbours of neighbour distance + step, whatever the processing order). Steps are < 2, so
    three ring slots suffice (one flat array, slot s at [s·cap, (s+1)·cap)).
    """
    h, w = labels.shape
    dist = np.full((h, w), -1.0)
    done = np.zeros((h, w), np.bool_)
    cap = 4096
    buf = np.empty(3 * cap, np.int64)
    size = np.zeros(3, np.int64)
    sq2 = math.sqrt(2.0)
    # queue entries are i << sh | j (shifts instead of divisions by w)
    sh = 1
    while (1 << sh) < w:
        sh += 1
    mask = (1 << sh) - 1
    # one object at a time: the wave front stays inside the object's bounding box (cache-friendly)
    for k in range(1, n + 1):
        if ci[k] < 0:
            continue
        dist[ci[k], cj[k]] = 0.0
        size[:] = 0
        buf[0] = (ci[k] << sh) | cj[k]
        size[0] = 1
        pending = 1
        bucket = 0
        while pending > 0:
            ring = bucket % 3
            t = 0
            # pushes go to buckets ⌊d + step⌋ ∈ {bucket + 1, bucket + 2}, never to this slot
            while t < size[ring]:
                idx = buf[ring * cap + t]
                t += 1
                pending -= 1
                i = idx >> sh
                j = idx & mask
                if done[i, j]:
                    continue
                done[i, j] = True
                d0 = dist[i, j]
                lab = labels[i, j]
                for di in (-1, 0, 1):
                    a = i + di
                    if a < 0 or a >= h:
                        continue
                    for dj in (-1, 0, 1):
                        b = j + dj
                        if b < 0 or b >= w or (di == 0 and dj == 0):
                            continue
                        if done[a, b] or labels[a, b] != lab:
                            continue
                        nd = d0 + (sq2 if (di != 0 and dj != 0) else 1.0)
                        if dist[a, b] < 0 or nd < dist[a, b]:
                            dist[a, b] = nd
                            slot = int(nd) % 3
                            if size[slot] == cap:
                                buf, cap = _grow_ring(buf, size, cap)
                            buf[slot * cap + size[slot]] = (a << sh) | b
                            size[slot] += 1
                            pending += 1
            size[ring] = 0
            bucket += 1
    return dist


@nb.njit(cache=True)
def _grow_ring(buf, size, cap):
    new = np.empty(6 * cap, np.int64)
    for s in range(3):
        new[2 * s * cap:2 * s * cap + size[s]] = buf[s * cap:s * cap + size[s]]
    return new, 2 * cap
