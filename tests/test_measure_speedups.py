"""The fast kernels of the shape / intensity / radial families against straightforward slow
implementations (per object, plain numpy / scipy / heapq), so that speed work cannot change a value.

Covered: label-wise distance transforms (both border conventions), the radius statistics, the
geodesic distance from the centres (bucket queue vs heap Dijkstra), the per-object quartiles /
MAD (uint64 key sort, merged MAD) on both the float32 and the generic path, the fused intensity
statistics and edge statistics, Zernike shape and intensity moments by runs vs direct evaluation,
and the shared LabelContext (measure_objects with it == each family on its own).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from profiler.measure._distance import edt_with_border, geodesic_from_centers, label_edt
from profiler.measure._hull import cp_enclosing_circles
from profiler.measure._labels import pixel_scan, radii_by_label, sorted_by_label, sorted_group_stats
from profiler.measure._radix import sort_float32_by_label
from profiler.measure import measure_objects
from profiler.measure.areashape import ZERNIKE_INDEXES, areashape
from profiler.measure.intensity import intensity
from profiler.measure.radial import _centers, radial_distribution
from profiler.measure.registry import get_family

OWN = ("AreaShape", "Intensity", "RadialDistribution", "Neighbors", "Location")


def _field(seed: int = 3, h: int = 90, w: int = 110):
    """Ellipses (some with holes, some touching each other or the border), a 1-pixel object,
    a border line, one absent number; float32 and generic float64 images."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int32)
    ii, jj = np.mgrid[:h, :w]
    k = 0
    for _ in range(14):
        k += 1
        ci, cj = rng.integers(0, h), rng.integers(0, w)
        a, b = rng.uniform(1.5, 12, 2)
        th = rng.uniform(0, np.pi)
        x = (jj - cj) * np.cos(th) + (ii - ci) * np.sin(th)
        y = -(jj - cj) * np.sin(th) + (ii - ci) * np.cos(th)
        rr = (x / a) ** 2 + (y / b) ** 2
        m = rr <= 1
        if k % 4 == 0:
            m &= rr > 0.25  # ring: an object with a hole
        lab[m] = k
    lab[2, 3] = k + 1                 # single pixel
    lab[h - 1, 40:52] = k + 2         # line on the border
    n = k + 4                         # k + 3 and k + 4 absent
    images = {
        "f32": rng.random((h, w)).astype(np.float32),
        "flat": np.full((h, w), 0.25, np.float32),
        "zero": np.zeros((h, w), np.float32),
        "q": (rng.integers(0, 6, (h, w)) / 65535).astype(np.float32),   # many ties
        "f64": rng.random((h, w)),                                       # not float32-exact
    }
    return lab, images, n


@pytest.fixture(scope="module")
def field():
    return _field()


def _objects(lab, n):
    return [k for k in range(1, n + 1) if (lab == k).any()]


def test_label_edt_matches_scipy(field):
    lab, _, n = field
    lab64 = lab.astype(np.int64)
    for border in (True, False):
        fast = label_edt(lab64, border)
        slow = np.zeros(lab.shape)
        for k in _objects(lab, n):
            m = lab == k
            if border:
                d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            else:
                d = ndi.distance_transform_edt(m)
            slow[m] = d[m]
        np.testing.assert_allclose(fast, slow, rtol=1e-15, atol=0, err_msg=f"border={border}")


def test_radius_statistics(field):
    lab, _, n = field
    out = areashape(lab, None, n_objects=n, zernike=False, advanced=False)
    for k in range(1, n + 1):
        m = lab == k
        if not m.any():
            assert np.isnan(out["AreaShape_MedianRadius"][k - 1])
            continue
        d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1][m]
        assert out["AreaShape_MaximumRadius"][k - 1] == d.max()
        assert out["AreaShape_MedianRadius"][k - 1] == np.median(d)
        assert out["AreaShape_MeanRadius"][k - 1] == pytest.approx(d.mean(), rel=1e-12)


def _heap_geodesic(lab, ci, cj, n):
    h, w = lab.shape
    dist = np.full((h, w), -1.0)
    done = np.zeros((h, w), bool)
    heap = []
    for k in range(1, n + 1):
        if ci[k] >= 0:
            dist[ci[k], cj[k]] = 0.0
            heap.append((0.0, int(ci[k]), int(cj[k])))
    heapq.heapify(heap)
    while heap:
        d, i, j = heapq.heappop(heap)
        if done[i, j]:
            continue
        done[i, j] = True
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if (di or dj) and 0 <= a < h and 0 <= b < w and not done[a, b] and lab[a, b] == lab[i, j]:
                    nd = d + (math.sqrt(2.0) if di and dj else 1.0)
                    if dist[a, b] < 0 or nd < dist[a, b]:
                        dist[a, b] = nd
                        heapq.heappush(heap, (nd, a, b))
    return dist


def test_geodesic_bucket_queue_equals_heap_dijkstra(field):
    lab, _, n = field
    lab64 = lab.astype(np.int64)
    ci, cj = _centers(lab64, label_edt(lab64, False), n)
    fast = geodesic_from_centers(lab64, ci, cj, n)
    np.testing.assert_array_equal(fast, _heap_geodesic(lab64, ci, cj, n))


def _edge_mask_slow(lab):
    p = np.pad(lab, 1, mode="edge")
    c = p[1:-1, 1:-1]
    e = (p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)
    return e & (lab > 0)


def _cp_quantile(v, f):
    q = v.size * f
    qi = int(np.floor(q))
    if qi < v.size - 1:
        return v[qi] * (1 - (q - qi)) + v[qi + 1] * (q - qi)
    return v[qi]


@pytest.mark.parametrize("ch", ["f32", "flat", "zero", "q", "f64"])
def test_intensity_against_per_object_numpy(field, ch):
    lab, images, n = field
    out = intensity(lab, {ch: images[ch]}, n_objects=n)
    img = images[ch].astype(np.float64)
    edge = _edge_mask_slow(lab)
    ii, jj = np.mgrid[:lab.shape[0], :lab.shape[1]]
    for k in range(1, n + 1):
        m = lab == k
        got = {name.split("_")[1]: out[name][k - 1] for name in out if name.startswith("Intensity_")}
        if not m.any():
            assert all(np.isnan(v) for v in got.values())
            continue
        v = img[m]
        s = np.sort(v)
        exp = {
            "IntegratedIntensity": v.sum(), "MeanIntensity": v.mean(), "StdIntensity": v.std(),
            "MinIntensity": v.min(), "MaxIntensity": v.max(),
            "LowerQuartileIntensity": _cp_quantile(s, 0.25), "MedianIntensity": _cp_quantile(s, 0.5),
            "UpperQuartileIntensity": _cp_quantile(s, 0.75),
        }
        exp["MADIntensity"] = np.median(np.abs(s - exp["MedianIntensity"]))
        ve = img[m & edge]
        if ve.size:
            exp.update({"IntegratedIntensityEdge": ve.sum(), "MeanIntensityEdge": ve.mean(),
                        "StdIntensityEdge": ve.std(), "MinIntensityEdge": ve.min(),
                        "MaxIntensityEdge": ve.max()})
        for key, val in exp.items():
            assert got[key] == pytest.approx(val, rel=1e-12, abs=1e-15), (k, key)
        # quartiles and MAD are order statistics: exact
        for key in ("LowerQuartileIntensity", "MedianIntensity", "UpperQuartileIntensity", "MADIntensity"):
            assert got[key] == exp[key], (k, key)
        tot = v.sum()
        if tot > 0:
            cy, cx = (ii[m] * v).sum() / tot, (jj[m] * v).sum() / tot
            assert out[f"Location_CenterMassIntensity_Y_{ch}"][k - 1] == pytest.approx(cy, rel=1e-12)
            assert out[f"Location_CenterMassIntensity_X_{ch}"][k - 1] == pytest.approx(cx, rel=1e-12)
        first = np.flatnonzero(np.where(m, img, -np.inf).ravel() == v.max())[0]
        assert out[f"Location_MaxIntensity_Y_{ch}"][k - 1] == first // lab.shape[1]
        assert out[f"Location_MaxIntensity_X_{ch}"][k - 1] == first % lab.shape[1]


def _zernike_direct(lab, k, ci, cj, r, weight, nn, mm):
    m = lab == k
    i, j = np.nonzero(m)
    x = (j - cj) / r
    y = (i - ci) / r
    keep = x * x + y * y <= 1.0  # CellProfiler (centrosome) zeroes pixels with ρ² > 1
    i, j, x, y = i[keep], j[keep], x[keep], y[keep]
    rho = np.hypot(x, y)
    theta = np.arctan2(y, x)
    rad = sum((-1) ** s * math.factorial(nn - s)
              / (math.factorial(s) * math.factorial((nn + mm) // 2 - s) * math.factorial((nn - mm) // 2 - s))
              * rho ** (nn - 2 * s) for s in range((nn - mm) // 2 + 1))
    return abs(np.sum(weight[i, j] * rad * np.exp(1j * mm * theta)))


def test_zernike_by_runs_equals_direct_evaluation(field):
    lab, images, n = field
    lab64 = lab.astype(np.int64)
    area, bbox, _, _ = pixel_scan(lab64, n)
    mec_i, mec_j, mec_r = cp_enclosing_circles(lab64, n, bbox)
    shape = areashape(lab, None, n_objects=n, advanced=False)
    rad = radial_distribution(lab, {"f32": images["f32"]}, n_objects=n)
    ones = np.ones(lab.shape)
    for k in range(1, n + 1):
        if not area[k] or not mec_r[k] > 0:
            assert np.isnan(shape["AreaShape_Zernike_2_0"][k - 1])
            continue
        for nn, mm in ZERNIKE_INDEXES[::3]:
            z = _zernike_direct(lab, k, mec_i[k], mec_j[k], mec_r[k], ones, nn, mm) / (np.pi * mec_r[k] ** 2)
            assert shape[f"AreaShape_Zernike_{nn}_{mm}"][k - 1] == pytest.approx(z, rel=1e-8, abs=1e-10)
            zi = _zernike_direct(lab, k, mec_i[k], mec_j[k], mec_r[k], images["f32"].astype(float), nn, mm) / area[k]
            got = rad[f"RadialDistribution_ZernikeMagnitude_f32_{nn}_{mm}"][k - 1]
            assert got == pytest.approx(zi, rel=1e-8, abs=1e-10)


def test_shared_context_changes_nothing(field):
    lab, images, n = field
    together = measure_objects(lab, images, compartment="X", families=OWN, n_objects=n)
    for fam_name in OWN:
        fam = get_family(fam_name)
        alone = fam.fn(lab, images, n_objects=n, **fam.defaults)
        for key, values in alone.items():
            np.testing.assert_array_equal(together[f"X_{key}"].to_numpy(), values, err_msg=key)


def test_radix_sort_by_label_equals_per_label_numpy_sort():
    """The radix sort of (label, float32) behind the quartiles: every label's values in np.sort's
    order, for negative, signed-zero, infinite, tied and random values and absent labels."""
    rng = np.random.default_rng(7)
    m = 5000
    lab = rng.integers(1, 40, m)
    lab[lab == 17] = 18  # an absent label in the middle
    vals = np.concatenate([rng.normal(0, 1, m - 60), np.zeros(10), -np.zeros(10), np.full(10, np.inf),
                           np.full(10, -np.inf), np.full(20, 0.5)]).astype(np.float32)
    rng.shuffle(vals)
    got = sort_float32_by_label(lab, vals)
    want = np.concatenate([np.sort(vals[lab == k]) for k in range(1, 40)]).astype(np.float64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)  # -0.0 == +0.0 (np.sort leaves their order open)


def test_radii_counting_equals_sorted_statistics(field):
    """Max / mean / median radius by counting squared distances == the sorted-values statistics,
    bit for bit (mean summed in ascending order), and the sorting fallback for inexact distances."""
    lab, _, n = field
    lab64 = lab.astype(np.int64)
    d = label_edt(lab64, True)
    sel = lab64.ravel() > 0
    dl, dv = lab64.ravel()[sel], d.ravel()[sel]
    want = sorted_group_stats(*sorted_by_label(dl, dv, n), n)
    got = radii_by_label(dl, dv, n)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    inexact = dv * 1.1  # not square roots of integers: the sorting path
    want = sorted_group_stats(*sorted_by_label(dl, inexact, n), n)
    for a, b in zip(radii_by_label(dl, inexact, n), want):
        np.testing.assert_array_equal(a, b)


def test_edt_with_border_derived_from_inside_transform(field):
    """The border-is-background distance transform derived from the other one == computed directly."""
    lab, _, _ = field
    rng = np.random.default_rng(11)
    cases = [lab.astype(np.int64), np.ones((7, 9), np.int64), np.full((1, 1), 3, np.int64)]
    cases += [(rng.integers(0, 4, (h, w)) * (rng.random((h, w)) < 0.7)).astype(np.int64)
              for h, w in rng.integers(1, 30, (40, 2))]
    for lab64 in cases:
        np.testing.assert_array_equal(edt_with_border(label_edt(lab64, False)), label_edt(lab64, True))
