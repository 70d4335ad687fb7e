"""RadialDistribution: fractions sum to one, flat images give MeanFrac 1 and RadialCV 0."""

import numpy as np
import pytest
from skimage.draw import disk

from profiler.measure.radial import radial_distribution


def _disk_image():
    lab = np.zeros((61, 61), np.int32)
    lab[disk((30, 30), 20, shape=lab.shape)] = 1
    return lab


def test_flat_image():
    lab = _disk_image()
    out = radial_distribution(lab, {"C": np.full(lab.shape, 0.2, np.float32)}, n_objects=1, zernike_degree=-1)
    fr = [out[f"RadialDistribution_FracAtD_C_{k}of4"][0] for k in range(1, 5)]
    assert sum(fr) == pytest.approx(1.0)
    assert fr == sorted(fr)  # more pixels (so more intensity) in outer rings
    for k in range(1, 5):
        assert out[f"RadialDistribution_MeanFrac_C_{k}of4"][0] == pytest.approx(1.0)
        assert out[f"RadialDistribution_RadialCV_C_{k}of4"][0] == pytest.approx(0.0, abs=1e-12)
    assert not any(k.startswith("RadialDistribution_ZernikeMagnitude") for k in out)


def test_bright_centre_and_zernike():
    lab = _disk_image()
    yy, xx = np.mgrid[:61, :61]
    img = np.exp(-((yy - 30) ** 2 + (xx - 30) ** 2) / 50.0).astype(np.float32)
    out = radial_distribution(lab, {"C": img}, n_objects=1)
    assert out["RadialDistribution_MeanFrac_C_1of4"][0] > 2
    assert out["RadialDistribution_FracAtD_C_4of4"][0] < 0.05
    # radially symmetric → m ≠ 0 Zernike magnitudes vanish, 0_0 = Σ I / area
    assert out["RadialDistribution_ZernikeMagnitude_C_0_0"][0] == pytest.approx(img[lab > 0].sum() / (lab > 0).sum())
    assert out["RadialDistribution_ZernikeMagnitude_C_3_1"][0] < 1e-8


def test_degenerate_objects():
    lab = np.zeros((12, 12), np.int32)
    lab[0, 0] = 1          # one pixel
    lab[4:9, 4:9] = 2      # zero intensity
    img = np.zeros((12, 12), np.float32)
    img[0, 0] = 0.5
    out = radial_distribution(lab, {"C": img}, n_objects=3)
    assert out["RadialDistribution_FracAtD_C_1of4"][0] == 1.0
    assert np.isnan(out["RadialDistribution_FracAtD_C_1of4"][1])   # 0/0 as CellProfiler
    assert out["RadialDistribution_RadialCV_C_2of4"][1] == 0.0
    assert np.isnan(out["RadialDistribution_FracAtD_C_1of4"][2])   # absent
    assert np.isnan(out["RadialDistribution_ZernikeMagnitude_C_0_0"][0])


def test_centre_ties_broken_as_cellprofiler():
    """Regression: CellProfiler takes scipy.ndimage.maximum_position of the distance to the edge, i.e. the
    last tied pixel in NumPy 1.26's unstable argsort of the whole image (not the first in raster order)."""
    from profiler.measure._cp_parity_sort import numpy1_argsort
    from profiler.measure._distance import label_edt
    from profiler.measure.radial import _centers

    rng = np.random.default_rng(0)
    v = rng.integers(0, 4, 50).astype(float)
    # np.argsort(v) of NumPy 1.26.4 (CellProfiler 5's), recorded in its environment
    want = [41, 31, 23, 32, 34, 36, 42, 43, 44, 27, 8, 6, 5, 7, 40, 39, 38, 37, 20, 4, 3, 48, 24, 29, 45,
            35, 46, 47, 49, 26, 1, 2, 10, 12, 13, 16, 17, 15, 22, 18, 19, 28, 14, 21, 33, 11, 9, 25, 30, 0]
    assert numpy1_argsort(v).tolist() == want
    lab = np.zeros((5, 10), np.int64)
    lab[1:4, 1:9] = 1                      # a 3 x 8 box: six pixels tie at distance 2 from the edge
    d = label_edt(lab, False)
    ci, cj = _centers(lab, d, 1)
    assert (ci[1], cj[1]) == (2, 4)       # scipy.ndimage.maximum_position in CellProfiler's environment
