"""Costes thresholds off the 16-bit grid (illumination-corrected images): the band-carrying search
(:class:`profiler.measure.correlation._BandSubsets`) finds the direct pass's thresholds."""

import numpy as np
import pytest

from profiler.measure import correlation as C


def _direct(x, y, scale, method, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(C, "_BandSubsets", C._Subsets)
        return C._costes(x, y, scale, method, None, None)


def _pairs(seed):
    rng = np.random.default_rng(seed)
    a = rng.gamma(2.0, 0.01, size=(120, 150)).astype(np.float32)
    yield a, (0.5 * a + rng.gamma(2.0, 0.01, size=a.shape)).astype(np.float32)  # correlated
    yield a, (1.0 - 0.7 * a + rng.normal(0, 0.002, a.shape)).astype(np.float32)  # anti-correlated
    yield a, rng.random(a.shape).astype(np.float32)  # independent
    b = a.copy()
    b[:40] = 0.02  # a constant block: ties and near-constant subsets
    yield b, (0.3 * b + rng.gamma(1.0, 0.005, size=b.shape)).astype(np.float32)


@pytest.mark.parametrize("method", ["faster", "fast", "accurate"])
@pytest.mark.parametrize("scale", [65535.0, 255.0])
def test_band_search_finds_the_direct_thresholds(method, scale, monkeypatch):
    for seed in (0, 1):
        for x, y in _pairs(seed):
            x64, y64 = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
            assert C._costes(x64, y64, scale, method, None, None) == _direct(x64, y64, scale, method, monkeypatch)


def test_band_sums_follow_the_direct_pass_in_any_order():
    """Carried quadrant sums equal a direct pass (to rounding) for candidates in any order, both
    directions, repeated and infinite thresholds; r near a decision value comes from the direct pass."""
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 0.01, 20000)
    y = 0.4 * x + rng.gamma(2.0, 0.01, 20000)
    x, y = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    band, direct = C._BandSubsets(x, y), C._Subsets(x, y)
    for t1, t2 in [(0.05, 0.04), (0.01, 0.03), (0.03, 0.005), (0.03, 0.005), (np.inf, 0.02), (0.02, np.inf),
                   (0.0, 0.0), (0.2, 0.2), (0.015, 0.012)] + [tuple(rng.random(2) * 0.06) for _ in range(40)]:
        nb, rb = band.pearson(t1, t2)
        nd, rd = direct.pearson(t1, t2)
        assert nb == nd
        assert (np.isnan(rb) and np.isnan(rd)) or abs(rb - rd) < 1e-9


def test_r_near_a_decision_value_is_recomputed_directly(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.gamma(2.0, 0.01, 5000).astype(np.float32).astype(np.float64)
    y = rng.gamma(2.0, 0.01, 5000).astype(np.float32).astype(np.float64)
    band = C._BandSubsets(x, y)
    calls = []
    monkeypatch.setattr(C, "_R_BOUNDARIES", np.array([band.exact.pearson(0.03, 0.03)[1]]))
    monkeypatch.setattr(C._Subsets, "pearson", lambda self, a, b: calls.append((a, b)) or (0, 0.0))
    band.pearson(0.03, 0.03)
    assert calls, "an r within the tolerance of a decision value must come from the direct pass"


def _sorts(x32, y32):
    from profiler.measure._util import ImageCache

    cache = ImageCache()
    return C._value_sort_cached(cache, x32), C._value_sort_cached(cache, y32)


@pytest.mark.filterwarnings("ignore:Degrees of freedom")  # the 1-pixel image's variances
@pytest.mark.parametrize("method", ["faster", "fast", "accurate"])
@pytest.mark.parametrize("scale", [65535.0, 255.0])
def test_band_search_on_value_orders_finds_the_direct_thresholds(method, scale, monkeypatch):
    """The bands grouped by the channels' value orders (shared with the RWC ranks) instead of a
    bucket sort per pair: the direct pass's thresholds, also with ties, signed zeros and 1-pixel images."""
    for seed in (2,):  # seeds 0 and 1: the test above
        for x, y in _pairs(seed):
            x = x.copy()
            x[5, :7] = -0.0
            x[6, :7] = 0.0
            x32, y32 = x.ravel(), y.ravel()
            x64, y64 = x32.astype(np.float64), y32.astype(np.float64)
            got = C._costes(x64, y64, scale, method, None, None, _sorts(x32, y32))
            assert got == _direct(x64, y64, scale, method, monkeypatch)
            assert got == C._costes(x64, y64, scale, method, None, None)
    one = np.array([0.25], np.float32)
    np.testing.assert_array_equal(  # (0, NaN): equal NaNs
        C._costes(one.astype(np.float64), one.astype(np.float64), scale, method, None, None, _sorts(one, one)),
        _direct(one.astype(np.float64), one.astype(np.float64), scale, method, monkeypatch))


def test_value_sort_sides_group_the_buckets_as_the_bucket_sort():
    """Each bucket holds the same pixels (as a multiset of (a, b) pairs) whichever way it was grouped."""
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 0.01, 30000).astype(np.float32)
    y = (0.4 * x + rng.gamma(2.0, 0.01, 30000)).astype(np.float32)
    x[:500] = x[500:1000]  # ties
    sx, sy = _sorts(x, y)
    for a, b, sa, sb in ((x, y, sx, sy), (y, x, sy, sx)):
        a_s, b_s, start, lo, scale = C._BandSubsets._side(a.astype(np.float64), b.astype(np.float64))
        a2, lazy, start2, lo2, scale2 = C._BandSubsets._sorted_side(sa, sb)
        b2 = lazy.upto(int(start2[start2.size // 2]))  # filled in two steps, as the searches ask
        b2 = lazy.upto(0)
        assert (lo, scale) == (lo2, scale2)
        np.testing.assert_array_equal(start, start2)
        for q in np.flatnonzero(np.diff(start))[:: 97]:
            sl = slice(start[q], start[q + 1])
            one = sorted(zip(a_s[sl].tolist(), b_s[sl].tolist()))
            two = sorted(zip(a2[sl].astype(np.float64).tolist(), b2[sl].astype(np.float64).tolist()))
            assert one == two
