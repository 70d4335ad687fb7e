"""numba convex hulls, Feret diameters, convex area and CellProfiler's minimum enclosing circles.

* :func:`hull_candidates` + :func:`hull_features`: hulls built from the pixels at the ends of
  each horizontal run (a superset of the hull vertices) → Feret diameters and convex area
  (scikit-image's ``convex_hull_image`` convention);
* :func:`cp_enclosing_circles`: the minimum enclosing circle exactly as CellProfiler 5 computes it
  (centrosome's ``convex_hull`` + ``minimum_enclosing_circle``, its floating-point formulas kept:
  the Zernike features depend on the radius to the last bit).

Pixel coordinates are (i, j) = (row, column) of the pixel centre.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from profiler.measure._labels import run_end

_INF = np.inf


@nb.njit(cache=True)
def hull_candidates(labels: np.ndarray, n: int):
    """Pixels at either end of a horizontal run, grouped by label (raster order within each
    label): (ii, jj, starts)."""
    cnt = np.zeros(n + 2, np.int64)
    _run_ends(labels, n, cnt, cnt, np.empty(0, np.float64), np.empty(0, np.float64), False)  # count
    starts = np.cumsum(cnt)
    pos = starts.copy()
    ii = np.empty(starts[-1], np.float64)
    jj = np.empty(starts[-1], np.float64)
    _run_ends(labels, n, cnt, pos, ii, jj, True)
    return ii, jj, starts


@nb.njit(cache=True)
def _run_ends(labels, n, cnt, pos, ii, jj, fill):  # pragma: no cover - numba
    """Walk the runs of objects 1..n in raster order; for the pixel at each end of a run (one for
    a one-pixel run) count it in cnt[label + 1] (``fill`` False) or write it at pos[label] (True)."""
    h, w = labels.shape
    for i in range(h):
        j = 0
        while j < w:
            lab = labels[i, j]
            e = run_end(labels, i, j)
            if lab > 0 and lab <= n:
                c = j
                while True:
                    if fill:
                        p = pos[lab]
                        ii[p] = i
                        jj[p] = c
                        pos[lab] += 1
                    else:
                        cnt[lab + 1] += 1
                    if c == e:
                        break
                    c = e
            j = e + 1


@nb.njit(cache=True)
def _cross(ox, oy, ax, ay, bx, by):
    return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox)


@nb.njit(cache=True)
def _monotone_chain(px, py, hx, hy):
    """Convex hull (counter-clockwise in (x, y), no collinear points) of points sorted by (x, y).

    Writes into hx, hy (length ≥ 2·len + 1); returns the number of hull vertices.
    """
    m = px.size
    if m == 1:
        hx[0] = px[0]
        hy[0] = py[0]
        return 1
    k = 0
    for t in range(m):
        while k >= 2 and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[t], py[t]) <= 0:
            k -= 1
        hx[k] = px[t]
        hy[k] = py[t]
        k += 1
    lower = k + 1
    for t in range(m - 2, -1, -1):
        while k >= lower and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[t], py[t]) <= 0:
            k -= 1
        hx[k] = px[t]
        hy[k] = py[t]
        k += 1
    k -= 1
    if k == 1 and hx[0] == hx[1] and hy[0] == hy[1]:
        return 1
    return k


@nb.njit(cache=True)
def _unique_sorted(px, py):
    m = px.size
    key = (px + 2.0) * 4.0e6 + (py + 2.0)
    order = np.argsort(key, kind='mergesort')
    ox = np.empty(m, np.float64)
    oy = np.empty(m, np.float64)
    u = 0
    for t in range(m):
        x = px[order[t]]
        y = py[order[t]]
        if u > 0 and ox[u - 1] == x and oy[u - 1] == y:
            continue
        ox[u] = x
        oy[u] = y
        u += 1
    return ox[:u], oy[:u]


@nb.njit(cache=True)
def hull_features(ii, jj, starts, n, bbox, want_convex_area):
    """Per object from run-end pixels: Feret diameters and convex area.

    Returns (min_feret, max_feret, convex_area); objects without pixels NaN. (The minimum enclosing
    circle is CellProfiler's own, :func:`cp_enclosing_circles`.)
    ``bbox``: (n+1, 4) int array of (min_i, min_j, max_i, max_j) inclusive.
    Convex area follows scikit-image's ``convex_hull_image``: pixels whose centres lie inside or
    on the hull of the pixels' edge midpoints.
    """
    min_f = np.full(n + 1, np.nan)
    max_f = np.full(n + 1, np.nan)
    carea = np.full(n + 1, np.nan)
    for k in range(1, n + 1):
        a, b = starts[k], starts[k + 1]
        if b == a:
            continue
        # x = column j, y = row i
        px, py = _unique_sorted(jj[a:b], ii[a:b])
        m = px.size
        hx = np.empty(2 * m + 2)
        hy = np.empty(2 * m + 2)
        h = _monotone_chain(px, py, hx, hy)
        # Feret
        dmax = 0.0
        for p in range(h):
            for q in range(p + 1, h):
                d = (hx[p] - hx[q]) ** 2 + (hy[p] - hy[q]) ** 2
                if d > dmax:
                    dmax = d
        max_f[k] = math.sqrt(dmax)
        if h <= 2:
            min_f[k] = 0.0
        else:
            best = _INF
            for p in range(h):
                q = (p + 1) % h
                ex = hx[q] - hx[p]
                ey = hy[q] - hy[p]
                el = math.hypot(ex, ey)
                far = 0.0
                for t in range(h):
                    dd = abs(ex * (hy[t] - hy[p]) - ey * (hx[t] - hx[p])) / el
                    if dd > far:
                        far = dd
                if far < best:
                    best = far
            min_f[k] = best
        if want_convex_area:
            # hull of the edge midpoints of the hull pixels
            qx = np.empty(4 * h)
            qy = np.empty(4 * h)
            for p in range(h):
                qx[4 * p] = hx[p] - 0.5
                qy[4 * p] = hy[p]
                qx[4 * p + 1] = hx[p] + 0.5
                qy[4 * p + 1] = hy[p]
                qx[4 * p + 2] = hx[p]
                qy[4 * p + 2] = hy[p] - 0.5
                qx[4 * p + 3] = hx[p]
                qy[4 * p + 3] = hy[p] + 0.5
            sx, sy = _unique_sorted(qx, qy)
            gx = np.empty(2 * sx.size + 2)
            gy = np.empty(2 * sx.size + 2)
            g = _monotone_chain(sx, sy, gx, gy)
            cnt = 0
            for i in range(bbox[k, 0], bbox[k, 2] + 1):
                # x-interval of the convex polygon on the line y = i
                xl = _INF
                xr = -_INF
                for p in range(g):
                    q = (p + 1) % g
                    y0 = gy[p]
                    y1 = gy[q]
                    if (y0 - i) * (y1 - i) > 0:
                        continue
                    if y0 == y1:
                        xa = min(gx[p], gx[q])
                        xb = max(gx[p], gx[q])
                    else:
                        xa = gx[p] + (i - y0) * (gx[q] - gx[p]) / (y1 - y0)
                        xb = xa
                    if xa < xl:
                        xl = xa
                    if xb > xr:
                        xr = xb
                if xr < xl:
                    continue
                # intersections are multiples of 1/(2·dy); 1e-7 separates exact integers from the rest
                jl = max(int(math.ceil(xl - 1e-7)), bbox[k, 1])
                jr = min(int(math.floor(xr + 1e-7)), bbox[k, 3])
                if jr >= jl:
                    cnt += jr - jl + 1
            carea[k] = cnt
    return min_f, max_f, carea


@nb.njit(cache=True)
def _cp_hull(lo, up, j0, j1, sentinel, hi, hj):
    """centrosome's ``convex_hull_ijv`` for one object from its column extremes ``lo``/``up``
    (min / max row of columns j0..j1; ``sentinel`` / -1 where a column is empty): the strict hull
    in CellProfiler's order (lower envelope left→right, upper envelope right→left, then the upper
    point of the first column).  Writes (i, j) into hi, hj; returns the number of points."""
    need_last = lo[0] != up[0]
    m = 0
    for j in range(j0, j1 + 1):
        v = lo[j - j0]
        if v < sentinel:
            while m >= 2 and not _cp_convex(hi[m - 2], hj[m - 2], hi[m - 1], hj[m - 1], v, j):
                m -= 1
            hi[m] = v
            hj[m] = j
            m += 1
    for j in range(j1, j0, -1):
        v = up[j - j0]
        if v > -1:
            while m >= 2 and not _cp_convex(hi[m - 2], hj[m - 2], hi[m - 1], hj[m - 1], v, j):
                m -= 1
            hi[m] = v
            hj[m] = j
            m += 1
    v = up[0]
    while m >= 2 and not _cp_convex(hi[m - 2], hj[m - 2], hi[m - 1], hj[m - 1], v, j0):
        m -= 1
    if need_last:
        hi[m] = v
        hj[m] = j0
        m += 1
    return m


@nb.njit(cache=True)
def _cp_convex(ai, aj, bi, bj, ci, cj):
    cross = (bj - aj) * (ci - bi) - (cj - bj) * (bi - ai)
    if cross > 0:
        return True
    if cross < 0:
        return False
    return bj > aj and bj > cj  # U-turn at the end of the points


@nb.njit(cache=True)
def _cp_mec(hi, hj, m):
    """centrosome's ``minimum_enclosing_circle`` (Chrystal's algorithm) on one hull in
    CellProfiler's order, with its floating-point formulas: (centre i, centre j, radius).

    The radius must be bit-identical to CellProfiler's: its Zernike code drops the pixels whose
    normalised ρ² exceeds 1 by round-off (about a third of the pixels lying on the circle)."""
    if m == 0:
        return np.nan, np.nan, 0.0
    if m == 1:
        return float(hi[0]), float(hj[0]), 0.0
    if m == 2:
        ci = (hi[0] + hi[1]) / 2
        cj = (hj[0] + hj[1]) / 2
        di = ci - hi[0]
        dj = cj - hj[0]
        return ci, cj, math.sqrt(di ** 2 + dj ** 2)
    s0 = 0
    s1 = 1
    half = math.pi / 2
    for _ in range(4 * m + 16):
        s01i = float(hi[s0] - hi[s1])
        s01j = float(hj[s0] - hj[s1])
        n01 = s01i ** 2 + s01j ** 2
        best = np.inf
        bv = -1
        b_a1 = 0.0
        b_a0 = 0.0
        for t in range(m):
            if t == s0 or t == s1:
                continue
            vs0i = float(hi[t] - hi[s0])
            vs0j = float(hj[t] - hj[s0])
            vs1i = float(hi[t] - hi[s1])
            vs1j = float(hj[t] - hj[s1])
            a1 = abs(math.acos((s01i * vs1i + s01j * vs1j) / math.sqrt(n01 * (vs1i ** 2 + vs1j ** 2))))
            a0 = abs(math.acos((-s01i * vs0i + -s01j * vs0j) / math.sqrt(n01 * (vs0i ** 2 + vs0j ** 2))))
            a = math.pi - a1 - a0
            if a < best:
                best = a
                bv = t
                b_a1 = a1
                b_a0 = a0
        if bv < 0 or best >= half:
            ci = (float(hi[s0]) + float(hi[s1])) / 2
            cj = (float(hj[s0]) + float(hj[s1])) / 2
            return ci, cj, math.sqrt(n01) / 2
        if not (b_a1 > half or b_a0 > half or best > half):
            y0 = float(hi[s0])
            x0 = float(hj[s0])
            y1 = float(hi[s1])
            x1 = float(hj[s1])
            yv = float(hi[bv])
            xv = float(hj[bv])
            d = 2 * (x0 * (y1 - yv) + x1 * (yv - y0) + xv * (y0 - y1))
            q0 = y0 ** 2 + x0 ** 2
            q1 = y1 ** 2 + x1 ** 2
            qv = yv ** 2 + xv ** 2
            cj = (q0 * (y1 - yv) + q1 * (yv - y0) + qv * (y0 - y1)) / d
            ci = (q0 * (xv - x1) + q1 * (x0 - xv) + qv * (x1 - x0)) / d
            return ci, cj, math.sqrt((y0 - ci) ** 2 + (x0 - cj) ** 2)
        if b_a0 > half:
            s0 = bv
        else:
            s1 = bv
    return np.nan, np.nan, 0.0


@nb.njit(cache=True)
def cp_enclosing_circles(labels: np.ndarray, n: int, bbox: np.ndarray):
    """Minimum enclosing circle of every object exactly as CellProfiler 5 computes it
    (centrosome ``convex_hull`` + ``minimum_enclosing_circle``): (ci, cj, r), rows 0..n,
    NaN centre and r = 0 for absent objects, r = 0 for one-pixel objects.

    One raster pass collects each object's per-column min/max row (all that centrosome's hull
    uses), then each object's hull and circle are built from those columns."""
    h, w = labels.shape
    off = np.zeros(n + 2, np.int64)
    for k in range(1, n + 1):
        width = bbox[k, 3] - bbox[k, 1] + 1 if bbox[k, 2] >= 0 else 0
        off[k + 1] = off[k] + width
    lo = np.full(off[n + 1], h + 1, np.int64)
    up = np.full(off[n + 1], -1, np.int64)
    for i in range(h):
        for j in range(w):
            k = labels[i, j]
            if k <= 0 or k > n:
                continue
            p = off[k] + j - bbox[k, 1]
            if lo[p] > i:
                lo[p] = i
            up[p] = i
    ci = np.full(n + 1, np.nan)
    cj = np.full(n + 1, np.nan)
    r = np.zeros(n + 1)
    for k in range(1, n + 1):
        width = off[k + 1] - off[k]
        if width == 0:
            continue
        hi = np.empty(2 * width + 2, np.int64)
        hj = np.empty(2 * width + 2, np.int64)
        m = _cp_hull(lo[off[k]:off[k + 1]], up[off[k]:off[k + 1]], bbox[k, 1], bbox[k, 3], h + 1, hi, hj)
        ci[k], cj[k], r[k] = _cp_mec(hi, hj, m)
    return ci, cj, r
