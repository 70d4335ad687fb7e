"""Intensity — CellProfiler 5's MeasureObjectIntensity, for all objects and channels at once.

Definitions (CellProfiler 5, ``cellprofiler_library`` measure_object_intensity):

* Integrated/Mean/Std (population)/Min/Max over the object's pixels; the *Edge* variants over
  its edge pixels (pixels with a 4-neighbour of another label, scikit-image
  ``find_boundaries(mode="inner")``; the image border itself is not an edge).
* Lower quartile / median / upper quartile use CellProfiler's convention: with the object's n
  values sorted, position q = n·f (f = ¼, ½, ¾), value = v[⌊q⌋]·(1 − frac) + v[⌊q⌋+1]·frac,
  or v[⌊q⌋] when ⌊q⌋ is the last index.
* MADIntensity: median (mean of the two middle values) of |v − MedianIntensity|.
* MassDisplacement: distance between the centroid and the intensity-weighted centroid.
* Location_CenterMassIntensity_X/Y: intensity-weighted centroid; Location_MaxIntensity_X/Y:
  position of the brightest pixel (first in raster order on ties).
* Objects absent from the label image: NaN. Zero-intensity objects: CellProfiler's 0/0 → NaN
  for the intensity-weighted centroid and the mass displacement.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba as nb
import numpy as np

from profiler.measure._labels import group_by_label, label_starts
from profiler.measure._radix import sort_float32_by_label
from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

_U = "intensity (raw / dtype max)"
_FEATURES = [
    FeatureDoc("Intensity_IntegratedIntensity_{channel}", "sum of the object's pixel intensities", _U),
    FeatureDoc("Intensity_MeanIntensity_{channel}", "mean pixel intensity", _U),
    FeatureDoc("Intensity_StdIntensity_{channel}", "standard deviation (population) of pixel intensities", _U),
    FeatureDoc("Intensity_MinIntensity_{channel}", "minimum pixel intensity", _U),
    FeatureDoc("Intensity_MaxIntensity_{channel}", "maximum pixel intensity", _U),
    FeatureDoc("Intensity_{Integrated,Mean,Std,Min,Max}IntensityEdge_{channel}",
               "the same over the object's edge pixels (4-neighbour of another label)", _U),
    FeatureDoc("Intensity_LowerQuartileIntensity_{channel}", "25th percentile, CellProfiler's n·f interpolation", _U),
    FeatureDoc("Intensity_MedianIntensity_{channel}", "50th percentile, same convention", _U),
    FeatureDoc("Intensity_UpperQuartileIntensity_{channel}", "75th percentile, same convention", _U),
    FeatureDoc("Intensity_MADIntensity_{channel}", "median absolute deviation from MedianIntensity", _U),
    FeatureDoc("Intensity_MassDisplacement_{channel}", "distance between centroid and intensity-weighted centroid", "pixels"),
    FeatureDoc("Location_CenterMassIntensity_{X,Y}_{channel}", "intensity-weighted centroid column / row", "pixels"),
    FeatureDoc("Location_MaxIntensity_{X,Y}_{channel}", "column / row of the brightest pixel", "pixels"),
]


@nb.njit(cache=True)
def _quantiles_mad(vals: np.ndarray, starts: np.ndarray, n: int):
    """CellProfiler's quartiles and MAD from values sorted within each label.

    The MAD's median of |v − median| needs no sort: the deviations of the values above the
    median, in order, and of those at or below it, in reverse order, are two sorted runs, merged
    up to the middle.
    """
    out = np.full((n + 1, 4), np.nan)
    fr = (0.25, 0.5, 0.75)
    for k in range(1, n + 1):
        a, b = starts[k], starts[k + 1]
        c = b - a
        if c == 0:
            continue
        for t in range(3):
            q = a + c * fr[t]
            qi = int(np.floor(q))
            qf = q - qi
            if qi < b - 1:
                out[k, t] = vals[qi] * (1 - qf) + vals[qi + 1] * qf
            else:
                out[k, t] = vals[qi]
        med = out[k, 1]
        m = a
        while m < b and vals[m] <= med:
            m += 1
        lo = m - 1  # walks down through the values ≤ med
        hi = m      # walks up through the values > med
        r_lo = (c - 1) // 2
        r_hi = c // 2
        x_lo = 0.0
        x_hi = 0.0
        for r in range(r_hi + 1):
            if hi >= b or (lo >= a and abs(vals[lo] - med) <= abs(vals[hi] - med)):
                x = abs(vals[lo] - med)
                lo -= 1
            else:
                x = abs(vals[hi] - med)
                hi += 1
            if r == r_lo:
                x_lo = x
            if r == r_hi:
                x_hi = x
        out[k, 3] = (x_lo + x_hi) / 2.0
    return out


@nb.njit(cache=True)
def _edge_mask(labels: np.ndarray) -> np.ndarray:
    h, w = labels.shape
    e = np.zeros((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab == 0:
                continue
            if ((i > 0 and labels[i - 1, j] != lab) or (i < h - 1 and labels[i + 1, j] != lab)
                    or (j > 0 and labels[i, j - 1] != lab) or (j < w - 1 and labels[i, j + 1] != lab)):
                e[i, j] = True
    return e


@nb.njit(cache=True, nogil=True)
def _edge_of_pixels(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """:func:`_edge_mask` at the flat positions ``idx`` (labelled pixels) only."""
    h, w = labels.shape
    flat = labels.ravel()
    e = np.zeros(idx.shape[0], np.bool_)
    for t in range(idx.shape[0]):
        k = idx[t]
        lab = flat[k]
        if lab == 0:
            continue
        i = k // w
        j = k - i * w
        if ((i > 0 and flat[k - w] != lab) or (i < h - 1 and flat[k + w] != lab)
                or (j > 0 and flat[k - 1] != lab) or (j < w - 1 and flat[k + 1] != lab)):
            e[t] = True
    return e


@nb.njit(cache=True)
def _stats(lab, v, edge, ii, jj, n):
    """One pass (plus one for the deviations) over the object pixels: count, sum, mean,
    population std, min, max (and the first raster position of the max) of all pixels and of
    the edge pixels, and the row/column-weighted intensity sums. Every sum runs
    in pixel order, as ``np.bincount`` does, so the results equal the per-array version."""
    cnt = np.zeros(n + 1)
    s = np.zeros(n + 1)
    mn = np.full(n + 1, np.inf)
    mx = np.full(n + 1, -np.inf)
    argmx = np.full(n + 1, -1, np.int64)
    ecnt = np.zeros(n + 1)
    es = np.zeros(n + 1)
    emn = np.full(n + 1, np.inf)
    emx = np.full(n + 1, -np.inf)
    wi = np.zeros(n + 1)
    wj = np.zeros(n + 1)
    for p in range(lab.size):
        k = lab[p]
        x = v[p]
        cnt[k] += 1
        s[k] += x
        if x < mn[k]:
            mn[k] = x
        if x > mx[k]:
            mx[k] = x
            argmx[k] = p
        wi[k] += ii[p] * x
        wj[k] += jj[p] * x
        if edge[p]:
            ecnt[k] += 1
            es[k] += x
            if x < emn[k]:
                emn[k] = x
            if x > emx[k]:
                emx[k] = x
    mean = np.full(n + 1, np.nan)
    emean = np.full(n + 1, np.nan)
    for k in range(n + 1):
        if cnt[k] > 0:
            mean[k] = s[k] / cnt[k]
        if ecnt[k] > 0:
            emean[k] = es[k] / ecnt[k]
    ss = np.zeros(n + 1)
    ess = np.zeros(n + 1)
    for p in range(lab.size):
        k = lab[p]
        d = v[p] - mean[k]
        ss[k] += d * d
        if edge[p]:
            d = v[p] - emean[k]
            ess[k] += d * d
    std = np.full(n + 1, np.nan)
    estd = np.full(n + 1, np.nan)
    for k in range(n + 1):
        if cnt[k] > 0:
            std[k] = np.sqrt(ss[k] / cnt[k])
        if ecnt[k] > 0:
            estd[k] = np.sqrt(ess[k] / ecnt[k])
    return s, mean, std, mn, mx, argmx, ecnt, es, emean, estd, emn, emx, wi, wj


@register("Intensity", description="MeasureObjectIntensity: intensity statistics per object and channel",
          features=_FEATURES)
def intensity(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int,
              context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Intensity statistics of every object in every channel (``Intensity_<Feature>_<channel>``
    and ``Location_CenterMassIntensity_*`` / ``Location_MaxIntensity_*``), as CellProfiler 5's
    MeasureObjectIntensity: integrated, mean, std, min, max, quartiles, median, MAD and mass
    displacement over the object's pixels and over its edge pixels (module docstring).

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images``: channel name → (H, W) float image on CellProfiler's scale
    (raw / dtype max); ``context``, the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings: none (CellProfiler's module has none besides the choice of images and objects).
    """
    n = int(n_objects)
    ctx = label_context(labels, n, context)
    lab_img = ctx.labels
    idx, lab = ctx.pixels()
    ii, jj = ctx.rows_cols_float()
    edge = _edge_of_pixels(lab_img, idx)
    cnt = ctx.counts().astype(np.float64)
    ci, cj = ctx.centroid()
    starts = label_starts(lab, n)
    s = slice(1, n + 1)
    out: dict[str, np.ndarray] = {}
    absent = cnt == 0
    for ch, img in images.items():
        raw = np.asarray(img).ravel()[idx]
        v = raw.astype(np.float64)
        (tot, mean, std, mn, mx, argmx, ecnt, etot, emean, estd, emn, emx,
         wi, wj) = _stats(lab, v, edge, ii, jj, n)
        for arr in (tot, mn, mx):
            arr[absent] = np.nan
        out[f"Intensity_IntegratedIntensity_{ch}"] = tot[s]
        out[f"Intensity_MeanIntensity_{ch}"] = mean[s]
        out[f"Intensity_StdIntensity_{ch}"] = std[s]
        out[f"Intensity_MinIntensity_{ch}"] = mn[s]
        out[f"Intensity_MaxIntensity_{ch}"] = mx[s]
        eabsent = ecnt == 0
        # CellProfiler leaves 0 for objects with pixels but no edge pixels
        for arr in (etot, emean, estd, emn, emx):
            arr[eabsent] = 0.0
            arr[absent] = np.nan
        out[f"Intensity_IntegratedIntensityEdge_{ch}"] = etot[s]
        out[f"Intensity_MeanIntensityEdge_{ch}"] = emean[s]
        out[f"Intensity_StdIntensityEdge_{ch}"] = estd[s]
        out[f"Intensity_MinIntensityEdge_{ch}"] = emn[s]
        out[f"Intensity_MaxIntensityEdge_{ch}"] = emx[s]
        with np.errstate(divide="ignore", invalid="ignore"):
            cmi_i = wi / tot
            cmi_j = wj / tot
        out[f"Intensity_MassDisplacement_{ch}"] = np.sqrt((ci - cmi_i) ** 2 + (cj - cmi_j) ** 2)[s]
        v32 = raw.astype(np.float32, copy=False)
        if raw.dtype == np.float32 or np.array_equal(v32, v):
            # one uint64 sort of (label, value) keys for all objects
            vs = sort_float32_by_label(lab, v32)
        else:
            vs = _sort_groups(v[group_by_label(lab, n)[0]], starts, n)
        q = _quantiles_mad(vs, starts, n)
        out[f"Intensity_LowerQuartileIntensity_{ch}"] = q[s, 0]
        out[f"Intensity_MedianIntensity_{ch}"] = q[s, 1]
        out[f"Intensity_MADIntensity_{ch}"] = q[s, 3]
        out[f"Intensity_UpperQuartileIntensity_{ch}"] = q[s, 2]
        out[f"Location_CenterMassIntensity_X_{ch}"] = cmi_j[s]
        out[f"Location_CenterMassIntensity_Y_{ch}"] = cmi_i[s]
        pos = np.where(argmx >= 0, argmx, 0)
        out[f"Location_MaxIntensity_X_{ch}"] = np.where(absent, np.nan, jj[pos] if jj.size else np.nan)[s]
        out[f"Location_MaxIntensity_Y_{ch}"] = np.where(absent, np.nan, ii[pos] if ii.size else np.nan)[s]
    return out


@nb.njit(cache=True)
def _sort_groups(vals: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    out = vals.copy()
    for k in range(1, n + 1):
        a, b = starts[k], starts[k + 1]
        if b - a > 1:
            out[a:b] = np.sort(out[a:b])
    return out
