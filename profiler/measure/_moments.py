"""numba image moments and Zernike moments of every object of a label image.

* :func:`moments_from_pixels`: spatial and central moments up to order 3 (scikit-image's regionprops);
* Zernike magnitudes (CellProfiler's MeasureObjectSizeShape and MeasureObjectIntensityDistribution):
  :func:`zernike_indexes` (CellProfiler's order), the polynomial coefficients
  (:func:`zernike_lut`, :func:`zernike_poly_coeffs`) and :func:`zernike_magnitudes_by_runs`, which
  sums geometric moments along horizontal runs of each object (:func:`run_poly_moments`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from profiler.measure._labels import run_end


@nb.njit(cache=True, nogil=True)
def moments_from_pixels(rows: np.ndarray, cols: np.ndarray, lab: np.ndarray, n: int, bbox: np.ndarray,
                        area: np.ndarray):  # pragma: no cover - numba
    """Spatial moments (relative to the bounding box origin, as scikit-image's regionprops) and
    central moments up to order 3 per axis, arrays (n+1, 4, 4) indexed [label, p, q] for
    Σ row^p col^q, from the labelled pixels in raster order (row, column, label of each; labels
    1..n), without scanning the background."""
    m = np.zeros((n + 1, 4, 4))
    for t in range(lab.shape[0]):
        k = lab[t]
        _add_powers(m[k], float(rows[t] - bbox[k, 0]), float(cols[t] - bbox[k, 1]))
    mu = np.zeros((n + 1, 4, 4))
    cr = np.zeros(n + 1)
    cc = np.zeros(n + 1)
    for k in range(1, n + 1):
        if area[k] > 0:
            cr[k] = m[k, 1, 0] / m[k, 0, 0]
            cc[k] = m[k, 0, 1] / m[k, 0, 0]
    for t in range(lab.shape[0]):
        k = lab[t]
        _add_powers(mu[k], (rows[t] - bbox[k, 0]) - cr[k], (cols[t] - bbox[k, 1]) - cc[k])
    return m, mu


@nb.njit(cache=True, nogil=True)
def _add_powers(acc, r, c):  # pragma: no cover - numba
    """acc[p, q] += r^p · c^q for p, q < 4 (one pixel's share of the moments)."""
    rp = 1.0
    for p in range(4):
        cq = 1.0
        for q in range(4):
            acc[p, q] += rp * cq
            cq *= c
        rp *= r


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


def zernike_poly_coeffs(indexes: list[tuple[int, int]]) -> np.ndarray:
    """Each R_nm(ρ)·(y + i·x)^m / ρ^m… written as a polynomial Σ C[a, b] x^a y^b: (nz, d+1, d+1) complex.

    Computed once per list of indexes and kept (a read-only array)."""
    key = tuple((int(nn), int(mm)) for nn, mm in indexes)
    out = _POLY_COEFFS.get(key)
    if out is None:
        out = _POLY_COEFFS[key] = _zernike_poly_coeffs(key)
        out.setflags(write=False)
    return out


_POLY_COEFFS: dict[tuple, np.ndarray] = {}  # indexes → zernike_poly_coeffs (a few small arrays at most)


def _zernike_poly_coeffs(indexes) -> np.ndarray:
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
            e = run_end(labels, i, j)
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
