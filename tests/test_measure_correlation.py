"""Correlation (MeasureColocalization within objects): analytic cases, Costes, degenerate objects."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats

from cellfusion_core.errors import ConfigError
from profiler.measure.correlation import costes_thresholds, correlation


def _labels(shape=(60, 60)):
    lab = np.zeros(shape, np.int32)
    lab[5:25, 5:25] = 1
    lab[30:50, 30:55] = 2
    lab[40:45, 5:12] = 3
    return lab


def test_identical_and_anticorrelated_channels():
    rng = np.random.default_rng(0)
    a = rng.random((60, 60)).astype(np.float32)
    out = correlation(_labels(), {"A": a, "B": a.copy(), "C": (1 - a).astype(np.float32)}, n_objects=3)
    for key in ("Correlation", "Manders", "Overlap", "K", "RWC"):
        np.testing.assert_allclose(out[f"Correlation_{key}_A_B"], 1, rtol=1e-12)
    np.testing.assert_allclose(out["Correlation_Correlation_A_C"], -1, rtol=1e-12)
    assert "Correlation_Correlation_B_A" not in out  # one Correlation per pair (i < j), both orders otherwise
    assert "Correlation_K_B_A" in out and "Correlation_Costes_C_A" in out


def test_manders_overlap_k_on_known_pixels():
    lab = np.zeros((2, 4), np.int32)
    lab[0] = 1
    x = np.array([[1.0, 1.0, 0.1, 0.0], [0, 0, 0, 0]], np.float32)
    y = np.array([[1.0, 0.0, 0.5, 0.5], [0, 0, 0, 0]], np.float32)
    out = correlation(lab, {"X": x, "Y": y}, n_objects=1)
    # thresholds 15 % of each max: x ≥ 0.15 → pixels 0,1 ; y ≥ 0.15 → pixels 0,2,3 ; both → pixel 0
    assert out["Correlation_Manders_X_Y"][0] == pytest.approx(1.0 / 2.0)
    assert out["Correlation_Manders_Y_X"][0] == pytest.approx(1.0 / 2.0)
    assert out["Correlation_Overlap_X_Y"][0] == pytest.approx(1.0)
    assert out["Correlation_K_X_Y"][0] == pytest.approx(1.0)
    expected_r = np.corrcoef(x[0].astype(float), y[0].astype(float))[0, 1]
    assert out["Correlation_Correlation_X_Y"][0] == pytest.approx(expected_r)


def test_rwc_ranks_across_all_objects():
    rng = np.random.default_rng(1)
    a = rng.random((60, 60)).astype(np.float32)
    b = (0.5 * a + 0.5 * rng.random((60, 60))).astype(np.float32)
    lab = _labels()
    both = correlation(lab, {"A": a, "B": b}, n_objects=3)["Correlation_RWC_A_B"]
    alone = correlation(np.where(lab == 1, 1, 0), {"A": a, "B": b}, n_objects=1)["Correlation_RWC_A_B"]
    assert both[0] != pytest.approx(alone[0])  # an object's RWC depends on the other objects (CP's convention)
    # reference: dense ranks of all object pixels together
    m = lab > 0
    ra = np.unique(a[m], return_inverse=True)[1]
    rb = np.unique(b[m], return_inverse=True)[1]
    R = max(ra.max(), rb.max()) + 1
    w = np.zeros(a.shape)
    w[m] = (R - np.abs(ra - rb)) / R
    o = lab == 2
    ta, tb = 0.15 * a[o].max(), 0.15 * b[o].max()
    sel = o & (a >= ta) & (b >= tb)
    expected = (a[sel] * w[sel]).sum() / a[o & (a >= ta)].sum()
    assert both[1] == pytest.approx(expected, rel=1e-5)


def _cp_bisection(fi, si, scale_max=255):
    """CellProfiler 5's bisection_costes, transcribed (float32 pixels, scipy pearsonr)."""
    non_zero = (fi > 0) | (si > 0)
    xvar = float(np.var(fi[non_zero], ddof=1))
    yvar = float(np.var(si[non_zero], ddof=1))
    xmean, ymean = float(np.mean(fi[non_zero])), float(np.mean(si[non_zero]))
    zvar = float(np.var(fi[non_zero] + si[non_zero], ddof=1))
    covar = 0.5 * (zvar - (xvar + yvar))
    a = ((yvar - xvar) + np.sqrt((yvar - xvar) ** 2 + 4 * covar * covar)) / (2 * covar)
    b = ymean - a * xmean
    left, right = 1, scale_max
    mid = ((right - left) // (6 / 5)) + left
    lastmid, valid = 0, 1
    while lastmid != mid:
        thr_fi = mid / scale_max
        thr_si = a * thr_fi + b
        combt = (fi < np.float32(thr_fi)) | (si < np.float32(thr_si))
        if np.count_nonzero(combt) <= 2:
            left = mid - 1
        else:
            r = scipy.stats.pearsonr(fi[combt], si[combt])[0]
            if r < 0:
                left = mid - 1
            elif r >= 0:
                right = mid + 1
                valid = mid
        lastmid = mid
        mid = ((right - left) // (6 / 5)) + left if right - left > 6 else ((right - left) // 2) + left
    thr_fi = (valid - 1) / scale_max
    return thr_fi, a * thr_fi + b


def test_costes_bisection_matches_cellprofiler_transcription():
    rng = np.random.default_rng(2)
    base = ndi.gaussian_filter(rng.random((80, 80)), 2)
    x = np.clip(np.rint((base * 0.6 + 0.4 * rng.random((80, 80))) * 255), 0, 255).astype(np.float32) / 255
    y = np.clip(np.rint((base * 0.5 + 0.5 * rng.random((80, 80))) * 255), 0, 255).astype(np.float32) / 255
    ours = costes_thresholds(x, y, 255, "faster")
    ref = _cp_bisection(x.ravel(), y.ravel(), 255)
    assert ours[0] == pytest.approx(ref[0], abs=1e-7)
    assert ours[1] == pytest.approx(ref[1], rel=1e-5)
    # the linear searches land on a threshold at or above the bisection's (it may stop slightly low)
    acc = costes_thresholds(x, y, 255, "accurate")
    assert acc[0] >= ours[0] - 1e-9


def test_costes_threshold_is_per_image_not_per_object():
    rng = np.random.default_rng(3)
    a = rng.random((60, 60)).astype(np.float32)
    b = (0.7 * a + 0.3 * rng.random((60, 60))).astype(np.float32)
    lab = _labels()
    full = correlation(lab, {"A": a, "B": b}, n_objects=3, costes_scale=65535)
    t1, t2 = costes_thresholds(a, b, 65535, "faster")
    o = lab == 3
    expected = a[o & (a >= t1) & (b >= t2)].sum() / a[o & (a >= t1)].sum()
    assert full["Correlation_Costes_A_B"][2] == pytest.approx(expected, rel=1e-6)


def test_degenerate_objects_never_raise():
    rng = np.random.default_rng(4)
    a = rng.random((40, 40)).astype(np.float32)
    const = np.full((40, 40), 0.2, np.float32)
    zero = np.zeros((40, 40), np.float32)
    lab = np.zeros((40, 40), np.int32)
    lab[0:10, 0:10] = 1  # touches the border
    lab[20, 20] = 2  # one pixel
    lab[25:35, 25:35] = 4  # label 3 absent
    out = correlation(lab, {"A": a, "K": const, "Z": zero}, n_objects=4)
    assert np.isnan(out["Correlation_Correlation_A_K"][[0, 1, 3]]).all()  # constant channel: 0/0
    assert np.isnan(out["Correlation_Correlation_A_Z"][[0, 1, 3]]).all()  # zero channel: 0/0
    assert np.isnan(out["Correlation_Correlation_A_K"][1])  # one pixel: 0/0
    for k, v in out.items():
        assert v.shape == (4,)
        assert np.isnan(v[2]), k  # absent object
    assert out["Correlation_Manders_A_K"][1] == pytest.approx(1.0)


def test_relabeling_invariance_and_bad_method():
    rng = np.random.default_rng(5)
    a = rng.random((60, 60)).astype(np.float32)
    b = (0.5 * a + 0.5 * rng.random((60, 60))).astype(np.float32)
    lab = _labels()
    base = correlation(lab, {"A": a, "B": b}, n_objects=3)
    perm = np.array([0, 3, 1, 2])
    relab = correlation(perm[lab], {"A": a, "B": b}, n_objects=3)
    for k in base:
        np.testing.assert_allclose(relab[k][perm[1:] - 1], base[k])
    with pytest.raises(ConfigError):
        correlation(lab, {"A": a, "B": b}, n_objects=3, costes_method="exact")


def test_dense_ranks_from_image_codes_equal_unique_ranks():
    """RWC ranks of images off the 16-bit grid (e.g. illumination-corrected) from the image's dense codes
    == np.unique's dense ranks of the object pixels (signed zeros equal, infinities ordered); NaN images
    are refused by the codes and fall back."""
    from profiler.measure._radix import dense_codes_f32
    from profiler.measure.correlation import _dense_rank, _object_ranks

    rng = np.random.default_rng(5)
    img = (rng.random(4000) * rng.choice([1.0, 1e-3, 7.0], 4000)).astype(np.float32)
    img[:20] = -0.0
    img[20:40] = 0.0
    img[40:45] = np.inf
    img[45:50] = -np.inf
    img[50:300] = img[300:550]  # ties
    ok, codes = dense_codes_f32(img.view(np.uint32))
    assert ok
    for _ in range(5):
        idx = np.sort(rng.choice(img.size, rng.integers(1, img.size), replace=False))
        np.testing.assert_array_equal(_object_ranks(img, img[idx], idx, None, codes), _dense_rank(img[idx]))
    img[7] = np.nan
    assert not dense_codes_f32(img.view(np.uint32))[0]


def test_value_order_is_the_stable_argsort():
    """value_order_f32: positions in value order == np.argsort(kind="stable") (−0.0 = +0.0 keep raster
    order), the sorted values carry each pixel's own bits, codes == np.unique's dense ranks; NaN refused."""
    from profiler.measure._radix import value_order_f32

    rng = np.random.default_rng(11)
    for size in (0, 1, 2, 5000):
        img = (rng.random(size) * rng.choice([1.0, 1e-3, 7.0], size)).astype(np.float32)
        if size > 100:
            img[:20] = -0.0
            img[20:40] = 0.0
            img[rng.choice(size, 30)] = 0.0
            img[rng.choice(size, 30)] = -0.0
            img[40:45] = np.inf
            img[45:50] = -np.inf
            img[50:300] = img[300:550]  # ties
        ok, codes, order, values = value_order_f32(img.view(np.uint32))
        assert ok
        expect = np.argsort(np.where(img == 0, np.float32(0), img), kind="stable")
        np.testing.assert_array_equal(order, expect)
        np.testing.assert_array_equal(values.view(np.uint32), img.view(np.uint32)[expect])
        np.testing.assert_array_equal(codes, np.unique(img, return_inverse=True)[1].reshape(-1))
    img[3] = np.nan
    assert not value_order_f32(img.view(np.uint32))[0]


def test_compact_ranks_equal_unique_ranks():
    """Ranks of the object pixels' codes through the bit set == np.unique's dense ranks (codes at and
    around word boundaries, ties, a single pixel, every code present)."""
    from profiler.measure.correlation import _compact_ranks

    rng = np.random.default_rng(12)
    for n_codes in (1, 63, 64, 65, 128, 1000):
        codes = rng.integers(0, n_codes, 3000).astype(np.int32)
        codes[:n_codes] = np.arange(n_codes)
        for idx in (np.arange(codes.size), np.sort(rng.choice(codes.size, 1 + rng.integers(codes.size), replace=False)),
                    np.array([rng.integers(codes.size)])):
            got = _compact_ranks(codes, idx.astype(np.int64), n_codes)
            np.testing.assert_array_equal(got, np.unique(codes[idx], return_inverse=True)[1].reshape(-1))


def test_regression_with_shared_channel_stats_is_the_same():
    """The orthogonal regression from the channels' cached variances and means equals the one
    computed from the pair (all pixels positive, zeros in one or both channels, a constant channel)."""
    from profiler.measure.correlation import _float32_stats, _regression

    rng = np.random.default_rng(13)
    x = rng.gamma(2.0, 0.01, 5000).astype(np.float32)
    y = (0.3 * x + rng.gamma(2.0, 0.01, 5000)).astype(np.float32)
    xz, yz = x.copy(), y.copy()
    xz[:300] = 0
    yz[100:400] = 0
    for a, b in ((x, y), (xz, y), (x, yz), (xz, yz), (np.full_like(x, 0.2), y)):
        assert _regression(a, b, (_float32_stats(a), _float32_stats(b))) == _regression(a, b)


def test_moment_sums_add_in_pixel_order():
    """_subset_sums / _band_sums: exactly the running float64 sums of a plain loop (same order)."""
    from profiler.measure.correlation import _band_sums, _subset_sums

    rng = np.random.default_rng(14)
    x, y = rng.random(500), rng.random(500)
    mx, my = float(x.mean()), float(y.mean())
    ref = [3.0, 0.5, -0.25, 1.0, 2.0, 0.125]
    got = np.array(ref)
    for xv, yv in zip(x, y):
        if xv < 0.6 or yv < 0.3:
            u, v = xv - mx, yv - my
            ref = [ref[0] + 1.0, ref[1] + u, ref[2] + v, ref[3] + u * u, ref[4] + v * v, ref[5] + u * v]
    _subset_sums(x, y, 0.6, 0.3, mx, my, got)
    assert got.tolist() == ref
    start = np.array([0, 200, 500], np.int64)
    ref = [0.0] * 6
    for k in range(200, 500):
        if 0.2 <= x[k] < 0.9 and not y[k] < 0.4:
            u, v = x[k] - mx, y[k] - my
            ref = [ref[0] - 1.0, ref[1] - u, ref[2] - v, ref[3] - u * u, ref[4] - v * v, ref[5] - u * v]
    got = np.zeros(6)
    _band_sums(x, y, x, y, 1, 1, start, 0.2, 0.9, 0.4, mx, my, got, -1.0)
    assert got.tolist() == ref
