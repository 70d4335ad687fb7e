"""RadialDistribution centres: the partial NumPy-1.26 argsort (only where it places some object's
tied maximum) gives exactly the centres of the full argsort of the whole distance image."""

import numpy as np
import pytest

from profiler.measure._cp_parity_sort import numpy1_argsort_partial, numpy1_argsort_values
from profiler.measure._distance import label_edt
from profiler.measure.radial import _centers, _centers_reference


def _same_centres(lab, d, n):
    a = _centers(lab, d, n)
    b = _centers_reference(lab, d, n)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    return a


@pytest.mark.parametrize("seed", range(12))
def test_partial_sort_places_wanted_values_as_full_sort(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 5000))
    v = rng.integers(0, int(rng.integers(1, 60)), size).astype(np.float64)
    if seed % 3 == 0:
        v = np.sqrt(v)
    if seed % 4 == 1:
        v[: size // 2] = 0.0  # long runs of one value
    t_full, w_full = numpy1_argsort_values(v)
    distinct = np.unique(v)
    wanted = np.sort(rng.choice(distinct, size=min(distinct.size, int(rng.integers(0, 6))), replace=False))
    t, w, leaves = numpy1_argsort_partial(v, wanted)
    assert sorted(t.tolist()) == list(range(size))  # still a permutation
    covered = np.zeros(size, bool)
    for a, b in leaves:
        assert not covered[a:b + 1].any()
        covered[a:b + 1] = True
    np.testing.assert_array_equal(t[covered], t_full[covered])
    np.testing.assert_array_equal(w[covered], w_full[covered])
    is_wanted = np.isin(w_full, wanted)
    assert covered[is_wanted].all()
    np.testing.assert_array_equal(t[np.isin(w, wanted)], t_full[is_wanted])


def test_partial_sort_edge_cases():
    for v in (np.zeros(0), np.array([3.0]), np.array([2.0, 2.0]), np.full(100, 7.0), np.arange(40.0)[::-1]):
        t_full, w_full = numpy1_argsort_values(v)
        for wanted in (np.zeros(0), np.unique(v), np.array([-1.0, 1e9])):
            t, w, leaves = numpy1_argsort_partial(v, wanted)
            keep = np.isin(w_full, wanted)
            np.testing.assert_array_equal(t[np.isin(w, wanted)], t_full[keep])


def _blocks(rng, h, w, n):
    lab = np.zeros((h, w), np.int64)
    for k in range(1, n + 1):
        i, j = rng.integers(0, h - 2), rng.integers(0, w - 2)
        lab[i:i + rng.integers(1, 12), j:j + rng.integers(1, 12)] = k  # rectangles: many tied maxima
    return lab


@pytest.mark.parametrize("seed", range(8))
def test_centres_equal_full_sort_on_tied_label_images(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = int(rng.integers(8, 90)), int(rng.integers(8, 90))
    n = int(rng.integers(1, 60))
    lab = _blocks(rng, h, w, n)
    if seed % 2:
        lab[rng.random((h, w)) < 0.1] = 0  # holes: more distinct distances
    d = label_edt(lab, False)
    _same_centres(lab, d, n)
    _same_centres(lab, d, max(n - 5, 1))  # labels above n are ignored
    _same_centres(lab, d, n + 5)          # absent labels: no centre


def test_centres_on_arbitrary_distances_and_degenerate_objects():
    rng = np.random.default_rng(7)
    lab = rng.integers(0, 6, (40, 50)).astype(np.int64)
    d = rng.integers(0, 4, (40, 50)).astype(np.float64) * (lab > 0)
    _same_centres(lab, d, 6)
    one = np.ones((9, 11), np.int64)                  # an object without background: inf distances
    ci, cj = _same_centres(one, label_edt(one, False), 1)
    assert ci[1] >= 0
    single = np.zeros((5, 5), np.int64)
    single[2, 3] = 1
    ci, cj = _same_centres(single, label_edt(single, False), 2)
    assert (ci[1], cj[1], ci[2]) == (2, 3, -1)


def test_centres_on_real_segmentation_shapes():
    from skimage.draw import ellipse
    rng = np.random.default_rng(3)
    lab = np.zeros((300, 400), np.int64)
    for k in range(1, 120):
        rr, cc = ellipse(rng.integers(0, 300), rng.integers(0, 400), rng.integers(2, 25), rng.integers(2, 25),
                         shape=lab.shape, rotation=rng.random() * np.pi)
        lab[rr, cc] = k
    _same_centres(lab, label_edt(lab, False), 119)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_fused_histogram_and_cv_equal_bincount_and_radial_cv(dtype):
    from profiler.measure.radial import _radial_cv, _radial_hist_cv

    rng = np.random.default_rng(11)
    n, nbins, m = 40, 5, 20000
    lab = rng.integers(1, n + 1, m)
    bins = rng.integers(0, nbins, m)
    wedge = rng.integers(0, 8, m)
    img = (rng.random(50000) * 1000).astype(dtype)
    idx = rng.integers(0, img.size, m)
    flat = img if img.dtype in (np.float32, np.float64) else img.astype(np.float64)
    hist, cv = _radial_hist_cv(lab, bins, wedge, idx, flat, n, nbins)
    v = img[idx].astype(np.float64)
    want = np.bincount(lab * nbins + bins, v, minlength=(n + 1) * nbins)
    assert np.array_equal(hist.view(np.uint64), want.view(np.uint64))
    assert np.array_equal(cv, _radial_cv(lab, bins, wedge, v, n, nbins))


def _introsort_order(num, lt, stats):
    """NumPy 1.26's argsort control flow (as numpy1_argsort_values) on indices, with the comparison
    ``lt(a, b)`` as a callback; counts the heapsorts (depth budget spent) in ``stats``."""
    import functools

    t = list(range(num))
    stack = []
    pl, pr = 0, num - 1
    cdepth = 2 * (num.bit_length() - 1)
    while num > 1:
        if cdepth < 0:
            stats["heap"] += 1
            t[pl:pr + 1] = sorted(t[pl:pr + 1], key=functools.cmp_to_key(
                lambda a, b: -1 if lt(a, b) else (1 if lt(b, a) else 0)))
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                if lt(t[pm], t[pl]):
                    t[pm], t[pl] = t[pl], t[pm]
                if lt(t[pr], t[pm]):
                    t[pr], t[pm] = t[pm], t[pr]
                if lt(t[pm], t[pl]):
                    t[pm], t[pl] = t[pl], t[pm]
                vp = t[pm]
                pi, pj = pl, pr - 1
                t[pm], t[pj] = t[pj], t[pm]
                while True:
                    pi += 1
                    while lt(t[pi], vp):
                        pi += 1
                    pj -= 1
                    while lt(vp, t[pj]):
                        pj -= 1
                    if pi >= pj:
                        break
                    t[pi], t[pj] = t[pj], t[pi]
                t[pi], t[pr - 1] = t[pr - 1], t[pi]
                cdepth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, cdepth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, cdepth))
                    pl = pi + 1
            for i in range(pl + 1, pr + 1):
                vi, j = t[i], i
                while j > pl and lt(vi, t[j - 1]):
                    t[j] = t[j - 1]
                    j -= 1
                t[j] = vi
        if not stack:
            break
        pl, pr, cdepth = stack.pop()
    return t


def _median_of_3_killer(num):
    """McIlroy's "antiqsort" adversary against that control flow: values that exhaust the depth
    budget, so that NumPy's introsort falls back to heapsort."""
    gas = num
    val = [gas] * num
    state = {"solid": 0, "cand": 0}

    def lt(x, y):
        if val[x] == gas and val[y] == gas:
            z = x if x == state["cand"] else y
            val[z] = state["solid"]
            state["solid"] += 1
        if val[x] == gas:
            state["cand"] = x
        elif val[y] == gas:
            state["cand"] = y
        return val[x] < val[y]

    _introsort_order(num, lt, {"heap": 0})
    return np.array(val, dtype=np.float64)


@pytest.mark.parametrize("num", [300, 2000])
def test_partial_sort_when_the_depth_budget_runs_out(num):
    """Adversarial inputs drive the sort into its heapsort fallback, with and without ties; the
    partial sort must fall back at the same sub-arrays (regression: a kept larger side used to be
    partitioned on instead of being pushed, popped and heapsorted)."""
    base = _median_of_3_killer(num)
    for coarse in (1, 2):
        v = np.floor(base / coarse)
        stats = {"heap": 0}
        order = _introsort_order(num, lambda a, b: v[a] < v[b], stats)
        assert stats["heap"] > 0  # the input really exercises the heapsort fallback
        t_full, w_full = numpy1_argsort_values(v)
        if coarse == 1:  # distinct values: one possible order
            assert t_full.tolist() == order
        for val in np.unique(v)[:: max(1, num // 150)]:
            for wanted in (np.array([val]), np.unique(v)[np.unique(v) >= val][:3]):
                t, w, _ = numpy1_argsort_partial(v, wanted)
                np.testing.assert_array_equal(t[np.isin(w, wanted)], t_full[np.isin(w_full, wanted)])
        lab = (np.arange(num) % 7 + 1).reshape(1, num).astype(np.int64)
        _same_centres(lab, v.reshape(1, num), 7)
