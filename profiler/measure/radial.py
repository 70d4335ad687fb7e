"""RadialDistribution — CellProfiler 5's MeasureObjectIntensityDistribution (centre = each object's
own point farthest from its edge, scaled bins).

Per object: the centre is the pixel with the largest distance to the edge (distance to the nearest
pixel of another label inside the image; ties broken exactly as CellProfiler 5 does: the last of
the tied pixels in NumPy 1.26's unstable argsort of the whole distance image); every pixel gets its geodesic distance d_c from the centre inside the object
(8-connected steps 1 and √2, as CellProfiler's ``propagate``) and its distance d_e to the edge;
normalised radius r = d_c / (d_c + d_e + 0.001); bin = ⌊r · bins⌋.

* FracAtD_<ch>_<k>of<bins>: fraction of the object's total intensity in bin k.
* MeanFrac: FracAtD / (fraction of the object's pixels in bin k + ε).
* RadialCV: coefficient of variation (population std / mean) of the mean intensity over the 8
  wedges around the centre that have pixels in bin k; 0 when none.
* ZernikeMagnitude_<ch>_<n>_<m> (``zernike_degree`` ≥ 0): |Σ I · R_nm(ρ)e^{imθ}| / area over the
  object's pixels, coordinates normalised by the minimum enclosing circle.

Pixels not connected to their object's centre are left out, as in CellProfiler.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba as nb
import numpy as np

from profiler.measure._cp_parity_sort import numpy1_argsort, numpy1_argsort_partial
from profiler.measure._distance import geodesic_from_centers
from profiler.measure._moments import zernike_indexes, zernike_magnitudes_by_runs
from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

_FEATURES = [
    FeatureDoc("RadialDistribution_FracAtD_{channel}_{k}of{bins}", "fraction of total intensity in radial bin k", "dimensionless"),
    FeatureDoc("RadialDistribution_MeanFrac_{channel}_{k}of{bins}", "FracAtD / fraction of the pixels in bin k", "dimensionless"),
    FeatureDoc("RadialDistribution_RadialCV_{channel}_{k}of{bins}", "CV of mean intensity over 8 wedges within bin k", "dimensionless"),
    FeatureDoc("RadialDistribution_ZernikeMagnitude_{channel}_{n}_{m}", "intensity-weighted Zernike magnitude / area", "intensity (raw / dtype max)"),
]


@nb.njit(cache=True)
def _centers_from_order(labels: np.ndarray, order: np.ndarray, n: int):
    """CellProfiler's ``scipy.ndimage.maximum_position(distance, labels, indexes)``: the image is
    argsorted by distance and, per label, the last pixel in that order wins. Scans the order from
    its end (first hit = last pixel) and stops once every label present in the image is found."""
    w = labels.shape[1]
    flat = labels.ravel()
    present = np.zeros(n + 1, np.bool_)
    todo = 0
    for p in range(flat.size):
        k = flat[p]
        if 0 < k <= n and not present[k]:
            present[k] = True
            todo += 1
    ci = np.full(n + 1, -1, np.int64)
    cj = np.full(n + 1, -1, np.int64)
    for q in range(order.size - 1, -1, -1):
        if todo == 0:
            break
        p = order[q]
        k = flat[p]
        if k <= 0 or k > n or ci[k] >= 0:
            continue
        ci[k] = p // w
        cj[k] = p % w
        todo -= 1
    return ci, cj


@nb.njit(cache=True)
def _object_maxima(flat: np.ndarray, d: np.ndarray, n: int):
    """Per label 1..n: the largest distance (-inf where absent), how many pixels have it and the
    last of them in raster order; and the sorted distinct maxima of the labels where several
    pixels tie for it."""
    m = np.full(n + 1, -np.inf)
    count = np.zeros(n + 1, np.int64)
    where = np.full(n + 1, -1, np.int64)
    for p in range(flat.size):
        k = flat[p]
        if 0 < k <= n:
            x = d[p]
            if x > m[k]:
                m[k] = x
                count[k] = 1
                where[k] = p
            elif x == m[k]:
                count[k] += 1
                where[k] = p
    vals = np.empty(n, np.float64)
    u = 0
    for k in range(1, n + 1):
        if count[k] > 1:
            vals[u] = m[k]
            u += 1
    vals = np.sort(vals[:u])
    v = 0
    for x in vals:
        if v == 0 or x != vals[v - 1]:
            vals[v] = x
            v += 1
    return m, count, where, vals[:v].copy()


@nb.njit(cache=True)
def _centers_from_leaves(flat, t, w, leaves, m, count, where, n, width):
    """Per label: its one pixel of largest distance, or, where several tie, the one the sort places
    last (only the finished pieces ``leaves`` can hold such pixels)."""
    best = np.full(n + 1, -1, np.int64)
    for r in range(leaves.shape[0]):
        for q in range(leaves[r, 0], leaves[r, 1] + 1):
            p = t[q]
            k = flat[p]
            if 0 < k <= n and w[q] == m[k] and q > best[k]:
                best[k] = q
    ci = np.full(n + 1, -1, np.int64)
    cj = np.full(n + 1, -1, np.int64)
    for k in range(1, n + 1):
        p = -1
        if count[k] == 1:
            p = where[k]
        elif count[k] > 1:
            p = t[best[k]]
        if p >= 0:
            ci[k] = p // width
            cj[k] = p % width
    return ci, cj


def _centers_reference(labels: np.ndarray, dist: np.ndarray, n: int):
    """:func:`_centers` the straightforward way: NumPy 1.26's argsort of the whole distance image,
    then the last pixel of each label in that order (kept as the tests' oracle)."""
    order = numpy1_argsort(np.ascontiguousarray(dist, np.float64).ravel())
    return _centers_from_order(labels, order, n)


def _centers(labels: np.ndarray, dist: np.ndarray, n: int):
    """Each object's point farthest from its edge, ties broken as CellProfiler 5 breaks them (the
    order NumPy 1.26's unstable argsort gives equal distances over the whole image).

    An object whose largest distance is reached by one pixel has that pixel as its centre. For the
    others the argsort of the whole image is carried out only where it places pixels whose
    distance is the maximum of such an object
    (:func:`~profiler.measure._cp_parity_sort.numpy1_argsort_partial`): those pixels end exactly
    where the full sort puts them, so the last one of each label — the centre — is the full sort's
    (:func:`_centers_reference`)."""
    flat = np.ascontiguousarray(labels).ravel()
    d = np.ascontiguousarray(dist, np.float64).ravel()
    m, count, where, wanted = _object_maxima(flat, d, int(n))
    t, w, leaves = numpy1_argsort_partial(d, wanted)
    return _centers_from_leaves(flat, t, w, leaves, m, count, where, int(n), labels.shape[1])


@nb.njit(cache=True)
def _cv_from_sums(s, c, n, nbins):
    """RadialCV (n+1, nbins) from per (label, bin, wedge) intensity sums ``s`` and counts ``c``."""
    cv = np.zeros((n + 1, nbins))
    for k in range(n + 1):
        for b in range(nbins):
            m = 0
            tot = 0.0
            for t in range(8):
                if c[k, b, t] > 0:
                    tot += s[k, b, t] / c[k, b, t]
                    m += 1
            if m == 0:
                continue
            mean = tot / m
            var = 0.0
            for t in range(8):
                if c[k, b, t] > 0:
                    d = s[k, b, t] / c[k, b, t] - mean
                    var += d * d
            std = np.sqrt(var / m)
            cv[k, b] = std / mean if mean != 0 else std
    return cv


@nb.njit(cache=True)
def _radial_cv(lab, bins, wedge, v, n, nbins):
    """RadialCV (n+1, nbins) from per-pixel label, bin, wedge (0..7) and intensity."""
    s = np.zeros((n + 1, nbins, 8))
    c = np.zeros((n + 1, nbins, 8))
    for p in range(lab.size):
        s[lab[p], bins[p], wedge[p]] += v[p]
        c[lab[p], bins[p], wedge[p]] += 1
    return _cv_from_sums(s, c, n, nbins)


@nb.njit(cache=True)
def _radial_hist_cv(lab, bins, wedge, idx, img, n, nbins):
    """One pass over the reached pixels of one channel (``img`` flat, values read at ``idx`` as
    float64): the intensity per (label, bin) — the additions of
    ``np.bincount(lab * nbins + bins, img[idx])``, in the same order — and RadialCV
    (:func:`_radial_cv`)."""
    hist = np.zeros((n + 1) * nbins)
    s = np.zeros((n + 1, nbins, 8))
    c = np.zeros((n + 1, nbins, 8))
    for p in range(lab.size):
        v = np.float64(img[idx[p]])
        k = lab[p]
        b = bins[p]
        hist[k * nbins + b] += v
        s[k, b, wedge[p]] += v
        c[k, b, wedge[p]] += 1
    return hist, _cv_from_sums(s, c, n, nbins)


@nb.njit(cache=True)
def _bins_wedges(pidx, plab, ii, jj, d_center, d_edge, ci, cj, bin_count):
    """For the labelled pixels: reached from the centre (mask), radial bin ⌊r · bins⌋ with
    r = d_c / (d_c + d_e + 0.001), and wedge (0..7) around the centre, of the reached ones."""
    m = pidx.size
    good = np.zeros(m, np.bool_)
    bins = np.empty(m, np.int64)
    wedge = np.empty(m, np.int64)
    u = 0
    for p in range(m):
        dc = d_center[pidx[p]]
        if dc < 0:
            continue
        good[p] = True
        de = d_edge[pidx[p]]
        r = dc / (dc + de + 0.001)
        b = np.int64(r * bin_count)
        bins[u] = b if b < bin_count else bin_count
        k = plab[p]
        di = ii[p] - ci[k]
        dj = jj[p] - cj[k]
        wedge[u] = (1 if di > 0 else 0) + (2 if dj > 0 else 0) + (4 if abs(di) > abs(dj) else 0)
        u += 1
    return good, bins[:u], wedge[:u]


def radial_geometry(labels: np.ndarray, n: int, bin_count: int,
                    context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Per-pixel label, bin and wedge of every pixel reached from its object's centre."""
    ctx = label_context(labels, n, context)
    lab_img = ctx.labels
    d_edge = ctx.edt(False)
    ci, cj = _centers(lab_img, d_edge, n)
    d_center = geodesic_from_centers(lab_img, ci, cj, n)
    pidx, plab = ctx.pixels()
    ii, jj = ctx.rows_cols()
    good, bins, wedge = _bins_wedges(pidx, plab, ii, jj, d_center.ravel(), d_edge.ravel(), ci, cj, bin_count)
    idx = pidx[good]
    lab = plab[good]
    return {"idx": idx, "lab": lab, "bins": bins, "wedge": wedge}


def _stacked_weights(images) -> np.ndarray:
    """The channels as one (n_channels, H, W) float array, the intensity Zernikes' weights (one per
    site: the three compartments share it through the site's ImageCache)."""
    w = np.stack([np.asarray(im) for im in images])
    return w if w.dtype in (np.float32, np.float64) else w.astype(np.float64)


@register("RadialDistribution", description="MeasureObjectIntensityDistribution: radial intensity "
          "distribution (FracAtD, MeanFrac, RadialCV) and intensity Zernike magnitudes", features=_FEATURES,
          defaults={"bin_count": 4, "zernike_degree": 9})
def radial_distribution(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int,
                        bin_count: int = 4, zernike_degree: int = 9,
                        context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Radial intensity distribution of every object in every channel, as CellProfiler 5's
    MeasureObjectIntensityDistribution with scaled bins and each object's own centre:
    ``RadialDistribution_FracAtD/MeanFrac/RadialCV_<channel>_<k>of<bin_count>`` and
    ``RadialDistribution_ZernikeMagnitude_<channel>_<n>_<m>`` (definitions in the module docstring).

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images``: channel name → (H, W) float image on CellProfiler's scale
    (raw / dtype max); ``context``, the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings (pipeline YAML ``features: {RadialDistribution: {...}}``): ``bin_count`` (number of
    radial bins, ≥ 1; default 4) and ``zernike_degree`` (highest Zernike order n of the intensity
    Zernike magnitudes, default 9; a negative value leaves them out).
    """
    from cellfusion_core.errors import ConfigError

    if int(bin_count) < 1:
        raise ConfigError(f"RadialDistribution bin_count must be at least 1, got {bin_count!r}",
                          hint="set features.RadialDistribution.bin_count in the pipeline YAML to e.g. 4 "
                               "(CellProfiler's default)")
    n = int(n_objects)
    nb_ = int(bin_count)
    ctx = label_context(labels, n, context)
    geo = radial_geometry(labels, n, nb_, ctx)
    idx, lab, bins, wedge = geo["idx"], geo["lab"], geo["bins"], geo["wedge"]
    lab_img = ctx.labels
    present = ctx.counts()[1:n + 1] > 0
    key = lab * (nb_ + 1) + bins
    number = np.bincount(key, minlength=(n + 1) * (nb_ + 1)).reshape(n + 1, nb_ + 1)[1:, :nb_].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac_pixels = number / number.sum(1, keepdims=True)
    out: dict[str, np.ndarray] = {}
    chans = list(images)
    for ch in chans:
        img = np.ascontiguousarray(images[ch]).ravel()
        if img.dtype not in (np.float32, np.float64):
            img = img.astype(np.float64)
        hist, cv = _radial_hist_cv(lab, bins, wedge, idx, img, n, nb_ + 1)
        hist = hist.reshape(n + 1, nb_ + 1)[1:, :nb_]
        cv = cv[1:, :nb_]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = hist / hist.sum(1, keepdims=True)
            mean_frac = frac / (frac_pixels + np.finfo(float).eps)
        for b in range(nb_):
            sfx = f"{ch}_{b + 1}of{nb_}"
            out[f"RadialDistribution_FracAtD_{sfx}"] = np.where(present, frac[:, b], np.nan)
            out[f"RadialDistribution_MeanFrac_{sfx}"] = np.where(present, mean_frac[:, b], np.nan)
            out[f"RadialDistribution_RadialCV_{sfx}"] = np.where(present, cv[:, b], np.nan)
    if int(zernike_degree) >= 0 and chans:
        zidx = zernike_indexes(int(zernike_degree))
        area = ctx.shape_scan()[0]
        _, _, mec_i, mec_j, mec_r, _ = ctx.hull()
        ok = mec_r > 0  # single-pixel and absent objects: NaN below
        w = ctx.images.get("zernike_weights", tuple(images[ch] for ch in chans), (),
                           lambda: _stacked_weights([images[ch] for ch in chans]))
        mag = zernike_magnitudes_by_runs(lab_img, n, mec_i, mec_j, np.where(ok, mec_r, 1.0), zidx, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = mag / area[:, None, None]
        mag[~(mec_r > 0)] = np.nan
        for c, ch in enumerate(chans):
            for t, (nn, mm) in enumerate(zidx):
                out[f"RadialDistribution_ZernikeMagnitude_{ch}_{nn}_{mm}"] = mag[1:, c, t]
    return out
