"""numba kernels shared by the shape and distribution families.

Everything here works on a whole label image at once (one pass over the pixels, or one pass
over pixels grouped by label); no Python loop over objects.  Conventions follow CellProfiler 5
(centrosome / scikit-image as CellProfiler calls them):

* pixel coordinates are (i, j) = (row, column) of the pixel centre;
* a *label-wise* distance transform measures, for a pixel of object k, the Euclidean distance
  to the nearest pixel that is not k (other objects count as background);
* convex hulls are built from the pixels at the ends of each horizontal run (a superset of
  the hull vertices).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_INF = np.inf


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
            e = j
            while e + 1 < w and labels[i, e + 1] == lab:
                e += 1
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
def hull_candidates(labels: np.ndarray, n: int):
    """Pixels at either end of a horizontal run, grouped by label: (ii, jj, starts)."""
    h, w = labels.shape
    cnt = np.zeros(n + 2, np.int64)
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            if j == 0 or labels[i, j - 1] != lab or j == w - 1 or labels[i, j + 1] != lab:
                cnt[lab + 1] += 1
    starts = np.cumsum(cnt)
    pos = starts.copy()
    ii = np.empty(starts[-1], np.float64)
    jj = np.empty(starts[-1], np.float64)
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            if j == 0 or labels[i, j - 1] != lab or j == w - 1 or labels[i, j + 1] != lab:
                p = pos[lab]
                ii[p] = i
                jj[p] = j
                pos[lab] += 1
    return ii, jj, starts


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
    for i in range(h):
        for j in range(w):
            if not border[i, j]:
                continue
            lab = labels[i, j]
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
            if code < 50:
                perim[lab] += weights[code]
    # Euler number, 8-connectivity: (Q1 - Q3 - 2 QD) / 4 over 2x2 windows of the zero-padded image
    eul = np.zeros(n + 1, np.int64)
    for i in range(-1, h):
        for j in range(-1, w):
            t0 = labels[i, j] if (i >= 0 and j >= 0) else 0
            t1 = labels[i, j + 1] if (i >= 0 and j + 1 < w) else 0
            t2 = labels[i + 1, j] if (i + 1 < h and j >= 0) else 0
            t3 = labels[i + 1, j + 1] if (i + 1 < h and j + 1 < w) else 0
            for s in range(4):
                lab = t0 if s == 0 else (t1 if s == 1 else (t2 if s == 2 else t3))
                if lab <= 0 or lab > n:
                    continue
                if s >= 1 and t0 == lab:
                    continue
                if s >= 2 and t1 == lab:
                    continue
                if s == 3 and t2 == lab:
                    continue
                b0 = t0 == lab
                b1 = t1 == lab
                b2 = t2 == lab
                b3 = t3 == lab
                q = b0 + b1 + b2 + b3
                if q == 1:
                    eul[lab] += 1
                elif q == 3:
                    eul[lab] -= 1
                elif q == 2 and ((b0 and b3) or (b1 and b2)):
                    eul[lab] -= 2
    return area, bbox, perim, eul


@nb.njit(cache=True)
def moments(labels: np.ndarray, n: int, bbox: np.ndarray, area: np.ndarray):
    """Spatial moments (relative to the bounding box origin, as scikit-image's regionprops)
    and central moments up to order 3 per axis: arrays (n+1, 4, 4) indexed [label, p, q] for
    Σ row^p col^q."""
    h, w = labels.shape
    m = np.zeros((n + 1, 4, 4))
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            r = float(i - bbox[lab, 0])
            c = float(j - bbox[lab, 1])
            rp = 1.0
            for p in range(4):
                cq = 1.0
                for q in range(4):
                    m[lab, p, q] += rp * cq
                    cq *= c
                rp *= r
    mu = np.zeros((n + 1, 4, 4))
    cr = np.zeros(n + 1)
    cc = np.zeros(n + 1)
    for k in range(1, n + 1):
        if area[k] > 0:
            cr[k] = m[k, 1, 0] / m[k, 0, 0]
            cc[k] = m[k, 0, 1] / m[k, 0, 0]
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            r = (i - bbox[lab, 0]) - cr[lab]
            c = (j - bbox[lab, 1]) - cc[lab]
            rp = 1.0
            for p in range(4):
                cq = 1.0
                for q in range(4):
                    mu[lab, p, q] += rp * cq
                    cq *= c
                rp *= r
    return m, mu


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


def zernike_indexes(degree: int) -> list[tuple[int, int]]:
    """(n, m) with 0 ≤ m ≤ n ≤ degree and n − m even, in CellProfiler's order."""
    return [(nn, mm) for nn in range(degree + 1) for mm in range(nn % 2, nn + 1, 2)]


def zernike_lut(indexes: list[tuple[int, int]]) -> np.ndarray:
    """Coefficients of the radial polynomials: lut[t, k] multiplies ρ^(n − 2k)."""
    from math import factorial

    width = max(nn for nn, _ in indexes) // 2 + 1
    lut = np.zeros((len(indexes), width))
    for t, (nn, mm) in enumerate(indexes):
        for k in range((nn - mm) // 2 + 1):
            lut[t, k] = ((-1) ** k * factorial(nn - k)
                         / (factorial(k) * factorial((nn + mm) // 2 - k) * factorial((nn - mm) // 2 - k)))
    return lut


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


def zernike_poly_coeffs(indexes: list[tuple[int, int]]) -> np.ndarray:
    """Each R_nm(ρ)·(y + i·x)^m / ρ^m… written as a polynomial Σ C[a, b] x^a y^b: (nz, d+1, d+1) complex."""
    from math import comb

    d = max(nn for nn, _ in indexes)
    lut = zernike_lut(indexes)
    out = np.zeros((len(indexes), d + 1, d + 1), complex)
    for t, (nn, mm) in enumerate(indexes):
        kmax = (nn - mm) // 2
        radial = np.zeros((d + 1, d + 1), complex)
        for k in range(kmax + 1):
            j = kmax - k  # lut[t, k] multiplies r2^(K - k) in CellProfiler's Horner scheme
            for i2 in range(j + 1):
                radial[2 * i2, 2 * (j - i2)] += lut[t, k] * comb(j, i2)
        ang = np.zeros((d + 1, d + 1), complex)
        for ll in range(mm + 1):
            ang[ll, mm - ll] += comb(mm, ll) * (1j ** ll)
        for a1 in range(d + 1):
            for b1 in range(d + 1):
                if radial[a1, b1] == 0:
                    continue
                for a2 in range(d + 1 - a1):
                    for b2 in range(d + 1 - b1):
                        if ang[a2, b2] != 0:
                            out[t, a1 + a2, b1 + b2] += radial[a1, b1] * ang[a2, b2]
    return out


@nb.njit(cache=True)
def run_poly_moments(labels, n, ci, cj, rad, weights, use_weights, deg):
    """Σ w · x^a y^b per object for a + b ≤ deg, with x = (j − cj[k]) / rad[k] and
    y = (i − ci[k]) / rad[k] over the pixels (i, j) of object k: (n+1, n_weights, deg+1, deg+1).

    It walks the label image by horizontal runs: y is constant along a run, so Σ_j w·x^a is accumulated per run (deg + 1 products per pixel) and multiplied by
    y^b once per run.  ``weights``: (n_weights, H, W) images, ignored (weight 1, one column)
    when ``use_weights`` is False.
    """
    h, w = labels.shape
    nw = weights.shape[0] if use_weights else 1
    acc = np.zeros((n + 1, nw, deg + 1, deg + 1))
    sx = np.zeros((nw, deg + 1))
    xp = np.empty(deg + 1)
    yp = np.empty(deg + 1)
    for i in range(h):
        j = 0
        while j < w:
            k = labels[i, j]
            e = j
            while e + 1 < w and labels[i, e + 1] == k:
                e += 1
            if k > 0 and k <= n:
                r = rad[k]
                y = (i - ci[k]) / r
                y2 = y * y
                sx[:, :] = 0.0
                for c in range(j, e + 1):
                    x = (c - cj[k]) / r
                    if x * x + y2 > 1.0:
                        continue  # CellProfiler zeroes pixels with ρ² > 1 (round-off on the circle)
                    xp[0] = 1.0
                    for a in range(1, deg + 1):
                        xp[a] = xp[a - 1] * x
                    if use_weights:
                        for t in range(nw):
                            wt = weights[t, i, c]
                            for a in range(deg + 1):
                                sx[t, a] += xp[a] * wt
                    else:
                        for a in range(deg + 1):
                            sx[0, a] += xp[a]
                yp[0] = 1.0
                for b in range(1, deg + 1):
                    yp[b] = yp[b - 1] * y
                for t in range(nw):
                    for a in range(deg + 1):
                        for b in range(deg + 1 - a):
                            acc[k, t, a, b] += sx[t, a] * yp[b]
            j = e + 1
    return acc


def zernike_magnitudes_by_runs(labels, n, ci, cj, rad, indexes, weights=None):
    """|Σ w · Z_nm| per object (n+1, n_weights, n_zernike) via run-wise geometric moments,
    coordinates normalised by the circle (ci, cj, rad); ``weights`` None → shape moments."""
    coeffs = zernike_poly_coeffs(indexes)
    d = coeffs.shape[1] - 1
    use = weights is not None
    wts = weights if use else np.zeros((1, 1, 1), np.float32)
    mom = run_poly_moments(labels, n, np.asarray(ci, np.float64), np.asarray(cj, np.float64),
                           np.asarray(rad, np.float64), wts, use, d)
    z = np.einsum("kcab,tab->kct", mom, coeffs)
    return np.abs(z)


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


def label_starts(lab: np.ndarray, n: int) -> np.ndarray:
    """starts (n + 2,) of each label's block in a by-label sorted pixel list."""
    starts = np.zeros(n + 2, np.int64)
    np.cumsum(np.bincount(lab, minlength=n + 1)[:n + 1], out=starts[1:])
    return starts


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
