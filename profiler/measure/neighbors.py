"""Neighbors — CellProfiler 5's MeasureObjectNeighbors (objects are their own neighbours).

For each *scale* (``scales`` parameter):

* ``"Adjacent"`` — CellProfiler's *Adjacent* method: objects within a 1-pixel dilation
  (disk of radius 1) count as neighbours; names end in ``_Adjacent``.
* an integer N — *Within a specified distance* N pixels (disk of radius N); names end in ``_N``.
* ``"Expanded"`` — *Expand until adjacent*: every background pixel first takes the label of its
  nearest object, then distance 1; names end in ``_Expanded``.

Features (CellProfiler's definitions):

* NumberOfNeighbors — other objects reached by the dilation of the object.
* PercentTouching — 100 · (outline pixels within distance N + ½ of another object's pixel) /
  (outline pixels); the outline is the 8-connected one of CellProfiler (image edges count).
* FirstClosestObjectNumber / FirstClosestDistance / SecondClosest… — nearest object centroids
  (Euclidean distance between centroids of the original objects, whatever the scale).
* AngleBetweenNeighbors — angle in degrees at the object's centroid between the first and the
  second closest centroids.

CellProfiler's Cell Painting pipelines (e.g. JUMP's) measure Cells with ``Adjacent`` and Nuclei
within distance 1; pass ``params={"Neighbors": {"scales": [1]}}`` for nuclei to get those names.
With a single object everything is 0, as in CellProfiler; absent objects are NaN.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

_FEATURES = [
    FeatureDoc("Neighbors_NumberOfNeighbors_{scale}", "number of other objects within the distance", "count"),
    FeatureDoc("Neighbors_PercentTouching_{scale}", "percent of outline pixels within the distance of another object", "percent"),
    FeatureDoc("Neighbors_FirstClosestObjectNumber_{scale}", "object number of the nearest centroid", "object number"),
    FeatureDoc("Neighbors_FirstClosestDistance_{scale}", "distance to the nearest centroid", "pixels"),
    FeatureDoc("Neighbors_SecondClosestObjectNumber_{scale}", "object number of the second nearest centroid", "object number"),
    FeatureDoc("Neighbors_SecondClosestDistance_{scale}", "distance to the second nearest centroid", "pixels"),
    FeatureDoc("Neighbors_AngleBetweenNeighbors_{scale}", "angle at the centroid between the two nearest centroids", "degrees"),
]


def _disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = int(radius)
    i, j = np.mgrid[-r:r + 1, -r:r + 1]
    keep = (i * i + j * j <= radius * radius) & ~((i == 0) & (j == 0))
    return i[keep].astype(np.int64), j[keep].astype(np.int64)


@nb.njit(cache=True)
def _scan(lab, n, oi, oj, ti, tj):
    """Outline pixel counts, touching counts and (a, b) neighbour codes."""
    h, w = lab.shape
    return _scan_at(lab, n, oi, oj, ti, tj, np.arange(h * w))


@nb.njit(cache=True)
def _scan_at(lab, n, oi, oj, ti, tj, pix):
    """:func:`_scan` visiting only the flat positions ``pix`` (raster order; e.g. the labelled
    pixels): the counts are whole numbers and the codes are sorted by the caller, so the result is
    the whole scan's whenever ``pix`` holds every pixel with 0 < label ≤ n."""
    h, w = lab.shape
    perim = np.zeros(n + 1)
    touch = np.zeros(n + 1)
    cap = 4096
    codes = np.empty(cap, np.int64)
    nc = 0
    for p in range(pix.shape[0]):
        i = pix[p] // w
        j = pix[p] - i * w
        a = lab[i, j]
        if a <= 0 or a > n:
            continue
        outline = i == 0 or j == 0 or i == h - 1 or j == w - 1
        if not outline:
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if lab[i + di, j + dj] != a:
                        outline = True
        if not outline:
            continue
        perim[a] += 1
        for t in range(ti.size):
            y = i + ti[t]
            x = j + tj[t]
            if y < 0 or y >= h or x < 0 or x >= w:
                continue
            b = lab[y, x]
            if b != 0 and b != a:
                touch[a] += 1
                break
        last = -1
        for t in range(oi.size):
            y = i + oi[t]
            x = j + oj[t]
            if y < 0 or y >= h or x < 0 or x >= w:
                continue
            b = lab[y, x]
            if b != 0 and b != a and b <= n and b != last:
                if nc == cap:
                    cap *= 2
                    c2 = np.empty(cap, np.int64)
                    c2[:nc] = codes[:nc]
                    codes = c2
                codes[nc] = a * (n + 1) + b
                nc += 1
                last = b
    return perim, touch, codes[:nc]


def _closest(ctx: LabelContext, n: int):
    """Centroid-based first/second closest object numbers, distances and angle (rows 1..n)."""
    cnt = ctx.counts()[1:]
    present = np.flatnonzero(cnt > 0)
    ci_all, cj_all = ctx.centroid()
    ci = ci_all[1:][present]
    cj = cj_all[1:][present]
    res = {k: np.full(n, np.nan) for k in ("n1", "d1", "n2", "d2", "angle")}
    m = present.size
    if m < 2:
        for k in res:
            res[k][present] = 0.0
        return res
    k = min(3, m)
    dist, nb_idx = cKDTree(np.column_stack([ci, cj])).query(np.column_stack([ci, cj]), k=k)
    # drop self (distance 0 at column 0 unless a duplicate centre sits there)
    self_first = nb_idx[:, 0] == np.arange(m)
    other = np.where(self_first[:, None], nb_idx[:, 1:], nb_idx[:, [0] + list(range(2, k))])
    odist = np.where(self_first[:, None], dist[:, 1:], dist[:, [0] + list(range(2, k))])
    res["n1"][present] = present[other[:, 0]] + 1
    res["d1"][present] = odist[:, 0]
    if k >= 3:
        res["n2"][present] = present[other[:, 1]] + 1
        res["d2"][present] = odist[:, 1]
        v1 = np.column_stack([cj[other[:, 0]] - cj, ci[other[:, 0]] - ci])
        v2 = np.column_stack([cj[other[:, 1]] - cj, ci[other[:, 1]] - ci])
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.sum(v1 * v2, 1) / np.sqrt(np.sum(v1 ** 2, 1) * np.sum(v2 ** 2, 1))
        res["angle"][present] = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    else:
        res["n2"][present] = 0.0
        res["d2"][present] = 0.0
        res["angle"][present] = 0.0
    return res


def _scale_name(scale) -> tuple[str, float]:
    from cellfusion_core.errors import ConfigError

    if isinstance(scale, str) and scale in ("Adjacent", "Expanded"):
        return scale, 1
    try:
        d = int(scale)
    except (TypeError, ValueError):
        d = -1
    if d < 1 or (isinstance(scale, float) and scale != d):
        raise ConfigError(f"Neighbors scale {scale!r} is not valid",
                          hint='use "Adjacent", "Expanded" or a positive whole number of pixels')
    return str(d), d


@register("Neighbors", description="MeasureObjectNeighbors: neighbour counts, touching fraction and "
          "nearest objects", features=_FEATURES, defaults={"scales": ("Adjacent",)})
def neighbors(labels: np.ndarray, images=None, *, n_objects: int, scales=("Adjacent",),
              context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Neighbour counts, touching percentage, closest objects and the angle between the two closest
    (``Neighbors_<Feature>_<scale>``) of every object, as CellProfiler 5's MeasureObjectNeighbors
    with the objects as their own neighbours (definitions in the module docstring).

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images`` is ignored; ``context``, the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings (pipeline YAML ``features: {Neighbors: {...}}``): ``scales``, a list of neighbour
    methods, each ``"Adjacent"`` (default), ``"Expanded"`` (expand until adjacent) or a positive
    whole number of pixels (within that distance); each scale adds its own set of columns.
    """
    n = int(n_objects)
    ctx = label_context(labels, n, context)
    lab0 = ctx.labels
    top = int(lab0.max()) if lab0.size else 0
    if top > n:
        lab0 = np.where(lab0 <= n, lab0, 0)
        top = int(lab0.max()) if lab0.size else 0
    present = ctx.counts()[1:n + 1] > 0
    closest = _closest(ctx, n)
    out: dict[str, np.ndarray] = {}
    for scale in ([scales] if isinstance(scales, (str, int)) else list(scales)):
        name, d = _scale_name(scale)
        lab = lab0
        if name == "Expanded" and lab0.any():
            ii, jj = ndi.distance_transform_edt(lab0 == 0, return_distances=False, return_indices=True)
            lab = np.ascontiguousarray(lab0[ii, jj])
        single = top <= 1
        if single:
            count = np.zeros(n)
            pct = np.zeros(n)
        else:
            oi, oj = _disk_offsets(d)
            ti, tj = _disk_offsets(d + 0.5)
            if lab is lab0:  # only the labelled pixels can count
                perim, touch, codes = _scan_at(lab, n, oi, oj, ti, tj, ctx.pixels()[0])
            else:
                perim, touch, codes = _scan(lab, n, oi, oj, ti, tj)
            pairs = np.unique(codes)
            count = np.bincount(pairs // (n + 1), minlength=n + 1)[1:n + 1].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                pct = (touch * 100.0 / perim)[1:n + 1]
        count = np.where(present, count, np.nan)
        pct = np.where(present, pct, np.nan)
        out[f"Neighbors_NumberOfNeighbors_{name}"] = count
        out[f"Neighbors_PercentTouching_{name}"] = pct
        z = 0.0 if single else None
        for key, feat in (("n1", "FirstClosestObjectNumber"), ("d1", "FirstClosestDistance"),
                          ("n2", "SecondClosestObjectNumber"), ("d2", "SecondClosestDistance"),
                          ("angle", "AngleBetweenNeighbors")):
            v = closest[key].copy()
            if z is not None:
                v[present] = z
            out[f"Neighbors_{feat}_{name}"] = v
    return out
