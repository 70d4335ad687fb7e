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
