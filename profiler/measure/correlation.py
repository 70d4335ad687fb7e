"""Correlation — CellProfiler's MeasureColocalization within objects, for every pair of channels.

For channels ``a``, ``b`` (in the order of ``images``; every pair i < j, as CellProfiler), per object:

* ``Correlation_Correlation_a_b`` — Pearson correlation of the two channels over the object's pixels
  (NaN for a constant channel: 0/0, as CellProfiler);
* thresholds: 15 % (``threshold_percentage``) of the object's own maximum in each channel; a pixel
  is "above" when ≥ that value;
* ``Correlation_Manders_a_b`` — Σ a over pixels above both thresholds / Σ a over pixels above a's
  threshold (and ``_Manders_b_a`` symmetrically);
* ``Correlation_RWC_a_b`` — like Manders, each pixel weighted by (R − |rank_a − rank_b|) / R, where
  ranks are *dense ranks of the intensities over all objects of the label image together*
  (CellProfiler's convention, so an object's RWC depends on its neighbours) and R = max rank + 1;
* ``Correlation_Overlap_a_b`` — Σ ab / sqrt(Σ a² · Σ b²) over pixels above both thresholds;
  ``Correlation_K_a_b`` = Σ ab / Σ a², ``Correlation_K_b_a`` = Σ ab / Σ b² (same pixels);
* ``Correlation_Costes_a_b`` — Manders with Costes' automatic thresholds. As in CellProfiler the
  threshold pair is found **once per channel pair over the whole image** (all pixels, not only the
  objects) and then applied inside every object. Method ``"faster"`` (CellProfiler 5's default,
  a bisection over candidate thresholds k / scale), ``"fast"`` or ``"accurate"`` (linear search);
  ``costes_scale`` is the image's dtype maximum (255 for 8-bit, 65535 for 16-bit data); ``"auto"``
  picks 255 when every pixel lies on the 8-bit grid, 65535 otherwise.

CellProfiler writes no per-object Slope (only an image-level one), so neither do we. When no pixel
of the whole label image is above both thresholds, Manders, RWC, Overlap and K are 0 for every
object (CellProfiler's convention); an object with no such pixel gets 0 (Manders, RWC) or NaN
(Overlap, K: 0/0). Objects absent from the label image get NaN.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numba
import numpy as np

from profiler.measure._util import object_pixels
from profiler.measure.granularity import fingerprint
from profiler.measure.registry import FeatureDoc, register

_COSTES_METHODS = ("faster", "fast", "accurate")

_DOCS = [
    FeatureDoc("Correlation_Correlation_{a}_{b}", "Pearson correlation of channels a and b over the object's pixels",
               "dimensionless"),
    FeatureDoc("Correlation_Manders_{a}_{b}", "Manders' coefficient: fraction of a's above-threshold intensity in "
               "pixels where b is also above threshold (thresholds: 15 % of the object's max)", "dimensionless"),
    FeatureDoc("Correlation_RWC_{a}_{b}", "rank-weighted colocalization (ranks over all objects of the image)",
               "dimensionless"),
    FeatureDoc("Correlation_Overlap_{a}_{b}", "overlap coefficient Σab / sqrt(Σa²Σb²) over above-threshold pixels",
               "dimensionless"),
    FeatureDoc("Correlation_K_{a}_{b}", "Σab / Σa² over above-threshold pixels", "dimensionless"),
    FeatureDoc("Correlation_Costes_{a}_{b}", "Manders' coefficient with Costes' automatic thresholds (found once "
               "over the whole image)", "dimensionless"),
]


# --------------------------------------------------------------------------- Costes thresholds (whole image)

@numba.njit(cache=True, nogil=True)
def _subset_cov(x: np.ndarray, y: np.ndarray, t1: float, t2: float, mx: float, my: float):  # pragma: no cover
    """n, covariance·n, var_x·n, var_y·n over pixels with x < t1 or y < t2 (shifted by mx, my for accuracy)."""
    n = 0
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for k in range(x.shape[0]):
        xv = x[k]
        yv = y[k]
        if xv < t1 or yv < t2:
            u = xv - mx
            v = yv - my
            n += 1
            sx += u
            sy += v
            sxx += u * u
            syy += v * v
            sxy += u * v
    if n == 0:
        return 0, 0.0, 0.0, 0.0
    return n, sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n


def _pearson_subset(x, y, t1, t2, mx, my) -> tuple[int, float]:
    """(count, Pearson r) of the subset, r NaN for a constant input (as scipy.stats.pearsonr)."""
    n, cov, vx, vy = _subset_cov(x, y, _f32(t1), _f32(t2), mx, my)
    if n < 2 or vx <= 0 or vy <= 0:
        return n, float("nan")
    return n, cov / np.sqrt(vx * vy)


def _regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Orthogonal-regression line y = a·x + b over pixels where either channel is non-zero (CP).

    Variances and means are taken on the float32 pixels (as CellProfiler), the rest in float64.
    """
    nz = (x > 0) | (y > 0)
    xs, ys = x[nz].astype(np.float32), y[nz].astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        xvar = float(np.var(xs, ddof=1))
        yvar = float(np.var(ys, ddof=1))
        zvar = float(np.var(xs + ys, ddof=1))
        covar = 0.5 * (zvar - (xvar + yvar))
        num = (yvar - xvar) + np.sqrt((yvar - xvar) ** 2 + 4 * covar * covar)
        a = np.float64(num) / np.float64(2 * covar)
        b = float(ys.mean()) - a * float(xs.mean())
    return float(a), float(b)


def _f32(t: float) -> float:
    """A threshold as CellProfiler compares it with float32 pixels (NumPy 1 casts the scalar to float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.float32(t))


def costes_thresholds(x: np.ndarray, y: np.ndarray, scale: float = 255.0, method: str = "faster") -> tuple[float, float]:
    """Costes' automatic threshold pair over the pixels ``x``, ``y`` (CellProfiler 5's algorithms)."""
    a, b = _regression(np.ravel(x), np.ravel(y))
    x = np.ascontiguousarray(x, dtype=np.float64).ravel()
    y = np.ascontiguousarray(y, dtype=np.float64).ravel()
    scale = float(scale)
    mx, my = float(x.mean()), float(y.mean())
    if method == "faster":
        left, right = 1.0, scale
        mid = ((right - left) // (6 / 5)) + left
        lastmid, valid = 0.0, 1.0
        while lastmid != mid:
            t1 = mid / scale
            n, r = _pearson_subset(x, y, t1, a * t1 + b, mx, my)
            if n <= 2:
                left = mid - 1
            elif r < 0:
                left = mid - 1
            elif r >= 0:
                right = mid + 1
                valid = mid
            lastmid = mid
            if right - left > 6:
                mid = ((right - left) // (6 / 5)) + left
            else:
                mid = ((right - left) // 2) + left
        t1 = (valid - 1) / scale
        return _f32(t1), _f32(a * t1 + b)
    # linear search ("fast" skips candidates while r is far above 0, "accurate" tests them all)
    step = 1 / scale
    img_max = max(x.max(), y.max())
    i = step * ((img_max // step) + 1)
    fi_max, si_max = x.max(), y.max()
    t1, t2 = i, a * i + b
    while i > fi_max and (a * i) + b > si_max:
        i -= step
    num_true, r = None, np.nan
    while i > step:
        t1, t2 = i, a * i + b
        n, r_new = _pearson_subset(x, y, t1, t2, mx, my)
        if n < 2:
            break
        if n != num_true:
            r, num_true = r_new, n
        if r <= 0:
            break
        if method == "accurate" or i < step * 10:
            i -= step
        elif r > 0.45:
            i -= step * 10
        elif r > 0.35:
            i -= step * 5
        elif r > 0.25:
            i -= step * 2
        else:
            i -= step
    return _f32(t1), _f32(t2)


def _infer_scale(*imgs: np.ndarray) -> float:
    for img in imgs:
        v = np.asarray(img, dtype=np.float64) * 255.0
        if not np.allclose(v, np.rint(v), rtol=0, atol=1e-3):
            return 65535.0
    return 255.0


_COSTES_CACHE: OrderedDict[tuple, tuple[float, float]] = OrderedDict()


def _costes_cached(img1: np.ndarray, img2: np.ndarray, scale, method: str) -> tuple[float, float]:
    key = (fingerprint(img1), fingerprint(img2), str(scale), method)
    hit = _COSTES_CACHE.get(key)
    if hit is None:
        s = _infer_scale(img1, img2) if scale in (None, "auto") else float(scale)
        x, y = np.asarray(img1).ravel(), np.asarray(img2).ravel()
        ok = ~(np.isnan(x) | np.isnan(y))
        hit = costes_thresholds(x[ok], y[ok], s, method) if ok.any() else (np.inf, np.inf)
        _COSTES_CACHE[key] = hit
        while len(_COSTES_CACHE) > 32:
            _COSTES_CACHE.popitem(last=False)
    return hit


# --------------------------------------------------------------------------- per-object measures

def _dense_rank(v: np.ndarray) -> np.ndarray:
    """Dense rank (0 = smallest value) of ``v`` (CellProfiler's get_image_rank)."""
    if v.size == 0:
        return np.zeros(0, dtype=np.int64)
    levels = np.rint(v * 65535.0)
    if levels.min() >= 0 and levels.max() <= 65535 and np.array_equal((levels / 65535.0).astype(v.dtype), v):
        # data on the 16-bit grid (every real image): counting ranks, no sort
        lv = levels.astype(np.int64)
        present = np.zeros(65536, dtype=np.int64)
        present[lv] = 1
        return (np.cumsum(present) - 1)[lv]
    return np.unique(v, return_inverse=True)[1].reshape(-1)


def _group_sum(values: np.ndarray, starts: np.ndarray, nonempty: np.ndarray, n: int) -> np.ndarray:
    """Per-object sums of ``values`` laid out object by object (``starts`` = first index of each object)."""
    out = np.zeros(n)
    if values.size:
        out[nonempty] = np.add.reduceat(values, starts[:-1][nonempty])
    return out


@register("Correlation", description="MeasureColocalization within objects: every pair of channels",
          features=_DOCS,
          defaults={"threshold_percentage": 15.0, "costes_method": "faster", "costes_scale": "auto"})
def correlation(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int,
                threshold_percentage: float = 15.0, costes_method: str = "faster",
                costes_scale: float | str | None = "auto") -> dict[str, np.ndarray]:
    """Colocalization features of every object for every channel pair (see the module docstring)."""
    method = str(costes_method).lower()
    if method not in _COSTES_METHODS:
        from profiler.errors import ConfigError

        raise ConfigError(f"unknown Costes method {costes_method!r}",
                          hint=f"set features.Correlation.costes_method to one of {', '.join(_COSTES_METHODS)}")
    labels = np.asarray(labels)
    names = list(images)
    n = n_objects
    idx, lab = object_pixels(labels, n)
    order = np.argsort(lab, kind="stable")
    idx, lab = idx[order], lab[order]
    counts = np.bincount(lab, minlength=n + 1)[1:]
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    nonempty = counts > 0
    empty = ~nonempty
    obj = lab - 1
    frac = float(threshold_percentage) / 100.0

    # per channel: pixels, above-threshold mask, thresholded sum, dense ranks
    per: dict[str, dict[str, np.ndarray]] = {}
    for ch in names:
        v = np.asarray(images[ch], dtype=np.float32).ravel()[idx]
        v64 = v.astype(np.float64)
        mx = np.zeros(n, dtype=np.float32)
        if v.size:
            mx[nonempty] = np.maximum.reduceat(v, starts[:-1][nonempty])
        # threshold in float32 arithmetic, as CellProfiler (NumPy 1: python float × float32 array)
        above = v >= (np.float32(frac) * mx)[obj]
        per[ch] = {"v": v64, "above": above, "thr_sum": _group_sum(np.where(above, v64, 0.0), starts, nonempty, n),
                   "rank": _dense_rank(v)}

    out: dict[str, np.ndarray] = {}
    for i1 in range(len(names) - 1):
        for i2 in range(i1 + 1, len(names)):
            a, b = names[i1], names[i2]
            x, y = per[a]["v"], per[b]["v"]
            with np.errstate(divide="ignore", invalid="ignore"):
                # Pearson correlation (two-pass, as CP)
                mean_x = _group_sum(x, starts, nonempty, n) / counts
                mean_y = _group_sum(y, starts, nonempty, n) / counts
                dx = x - mean_x[obj] if x.size else x
                dy = y - mean_y[obj] if y.size else y
                sxy = _group_sum(dx * dy, starts, nonempty, n)
                sxx = _group_sum(dx * dx, starts, nonempty, n)
                syy = _group_sum(dy * dy, starts, nonempty, n)
                corr = sxy / np.sqrt(sxx * syy)
                corr[empty] = np.nan
                out[f"Correlation_Correlation_{a}_{b}"] = corr

                both = per[a]["above"] & per[b]["above"]
                if both.any():
                    m1 = _group_sum(np.where(both, x, 0.0), starts, nonempty, n) / per[a]["thr_sum"]
                    m2 = _group_sum(np.where(both, y, 0.0), starts, nonempty, n) / per[b]["thr_sum"]
                    ra, rb = per[a]["rank"], per[b]["rank"]
                    R = max(ra.max(), rb.max()) + 1
                    w = (R - np.abs(ra - rb)) / R
                    rwc1 = _group_sum(np.where(both, x * w, 0.0), starts, nonempty, n) / per[a]["thr_sum"]
                    rwc2 = _group_sum(np.where(both, y * w, 0.0), starts, nonempty, n) / per[b]["thr_sum"]
                    fpsq = _group_sum(np.where(both, x * x, 0.0), starts, nonempty, n)
                    spsq = _group_sum(np.where(both, y * y, 0.0), starts, nonempty, n)
                    pxy = _group_sum(np.where(both, x * y, 0.0), starts, nonempty, n)
                    overlap = pxy / np.sqrt(fpsq * spsq)
                    k1 = pxy / fpsq
                    k2 = pxy / spsq
                else:
                    m1 = m2 = rwc1 = rwc2 = overlap = k1 = k2 = np.zeros(n)

                t1, t2 = _costes_cached(images[a], images[b], costes_scale, method)
                ca = x >= t1
                cb = y >= t2
                cboth = ca & cb
                if cboth.any():
                    c1 = _group_sum(np.where(cboth, x, 0.0), starts, nonempty, n) / \
                        _group_sum(np.where(ca, x, 0.0), starts, nonempty, n)
                    c2 = _group_sum(np.where(cboth, y, 0.0), starts, nonempty, n) / \
                        _group_sum(np.where(cb, y, 0.0), starts, nonempty, n)
                else:
                    c1 = c2 = np.zeros(n)
            for key, val in ((f"Manders_{a}_{b}", m1), (f"Manders_{b}_{a}", m2), (f"RWC_{a}_{b}", rwc1),
                             (f"RWC_{b}_{a}", rwc2), (f"Overlap_{a}_{b}", overlap), (f"K_{a}_{b}", k1),
                             (f"K_{b}_{a}", k2), (f"Costes_{a}_{b}", c1), (f"Costes_{b}_{a}", c2)):
                val = np.array(val, dtype=np.float64)
                val[empty] = np.nan
                out[f"Correlation_{key}"] = val
    return out
