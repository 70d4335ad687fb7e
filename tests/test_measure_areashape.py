"""AreaShape: analytic answers on disks, squares and ellipses, and degenerate objects."""

import numpy as np
import pytest
from skimage.draw import disk, ellipse
from skimage.measure import regionprops

from profiler.measure.areashape import areashape


def _disk(r=20, shape=(80, 80), center=(40, 40)):
    lab = np.zeros(shape, np.int32)
    lab[disk(center, r, shape=shape)] = 1
    return lab


def test_square_exact():
    lab = np.zeros((30, 30), np.int32)
    lab[5:15, 8:18] = 1
    out = areashape(lab, None, n_objects=1)
    assert out["AreaShape_Area"][0] == 100
    # scikit-image's perimeter: 4 straight sides of 9 + 4 corners weighted (1+√2)/2 … = 36 + …
    assert out["AreaShape_Perimeter"][0] == pytest.approx(regionprops(lab)[0].perimeter)
    assert out["AreaShape_Extent"][0] == 1.0
    assert out["AreaShape_Solidity"][0] == 1.0
    assert out["AreaShape_ConvexArea"][0] == 100
    assert out["AreaShape_EulerNumber"][0] == 1
    assert out["AreaShape_Eccentricity"][0] == pytest.approx(0.0, abs=1e-12)
    assert out["AreaShape_MaxFeretDiameter"][0] == pytest.approx(np.hypot(9, 9))
    assert out["AreaShape_MinFeretDiameter"][0] == pytest.approx(9.0)
    assert out["AreaShape_BoundingBoxMinimum_X"][0] == 8 and out["AreaShape_BoundingBoxMaximum_X"][0] == 18
    assert out["AreaShape_BoundingBoxMinimum_Y"][0] == 5 and out["AreaShape_BoundingBoxMaximum_Y"][0] == 15
    assert out["AreaShape_Center_X"][0] == 12.5 and out["AreaShape_Center_Y"][0] == 9.5
    # distance to the outside: centre pixels of a 10×10 square are 5 from the edge
    assert out["AreaShape_MaximumRadius"][0] == 5.0
    # CP's 1-pixel-square case for the orientation of a symmetric tensor: −45°
    assert out["AreaShape_Orientation"][0] == -45.0


def test_disk_analytic():
    r = 20
    out = areashape(_disk(r), None, n_objects=1)
    assert out["AreaShape_Area"][0] == pytest.approx(np.pi * r * r, rel=0.01)
    assert out["AreaShape_Perimeter"][0] == pytest.approx(2 * np.pi * r, rel=0.03)
    assert out["AreaShape_FormFactor"][0] == pytest.approx(1.0, abs=0.08)
    assert out["AreaShape_Eccentricity"][0] < 0.05
    assert out["AreaShape_MajorAxisLength"][0] == pytest.approx(2 * r, rel=0.02)
    assert 2 * r - 2 <= out["AreaShape_MaxFeretDiameter"][0] <= 2 * r  # between pixel centres
    assert out["AreaShape_MinFeretDiameter"][0] == pytest.approx(2 * r - 2, abs=0.6)
    assert out["AreaShape_MaximumRadius"][0] == pytest.approx(r, abs=1)
    assert out["AreaShape_EquivalentDiameter"][0] == pytest.approx(2 * r, rel=0.01)
    # Zernike_0_0 = pixels / (π r_mec²) ≈ 1 for a disk; odd-m moments vanish by symmetry
    assert out["AreaShape_Zernike_0_0"][0] == pytest.approx(1.0, abs=0.05)
    for key in ("AreaShape_Zernike_1_1", "AreaShape_Zernike_3_1", "AreaShape_Zernike_5_3"):
        assert out[key][0] < 1e-6
    assert out["AreaShape_Zernike_2_2"][0] < 1e-6  # rotational symmetry of order 4


def test_ellipse_axes_and_eccentricity():
    a, b = 30, 12  # semi-axes along columns and rows
    lab = np.zeros((100, 100), np.int32)
    lab[ellipse(50, 50, b, a, shape=lab.shape)] = 1
    out = areashape(lab, None, n_objects=1)
    assert out["AreaShape_MajorAxisLength"][0] == pytest.approx(2 * a, rel=0.02)
    assert out["AreaShape_MinorAxisLength"][0] == pytest.approx(2 * b, rel=0.04)
    assert out["AreaShape_Eccentricity"][0] == pytest.approx(np.sqrt(1 - (b / a) ** 2), abs=0.01)
    assert abs(abs(out["AreaShape_Orientation"][0]) - 90) < 1  # major axis along the columns
    # Zernike with m odd vanish for a centred ellipse; m = 2 does not
    assert out["AreaShape_Zernike_3_1"][0] < 1e-6
    assert out["AreaShape_Zernike_2_2"][0] > 0.01


def test_matches_regionprops_on_random_labels():
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(1)
    lab = np.zeros((120, 140), np.int32)
    pts = rng.integers(5, 115, (12, 2))
    lab[pts[:, 0], pts[:, 1]] = np.arange(1, 13)
    lab = expand_labels(lab, 10)
    lab[rng.random(lab.shape) < 0.02] = 0  # holes
    out = areashape(lab, None, n_objects=12)
    for p in regionprops(lab):
        k = p.label - 1
        assert out["AreaShape_Area"][k] == p.area
        assert out["AreaShape_Perimeter"][k] == pytest.approx(p.perimeter)
        assert out["AreaShape_ConvexArea"][k] == p.area_convex
        assert out["AreaShape_EulerNumber"][k] == p.euler_number
        assert out["AreaShape_MajorAxisLength"][k] == pytest.approx(p.axis_major_length)
        assert out["AreaShape_MinorAxisLength"][k] == pytest.approx(p.axis_minor_length)
        assert out["AreaShape_Eccentricity"][k] == pytest.approx(p.eccentricity)
        assert out["AreaShape_CentralMoment_1_2"][k] == pytest.approx(p.moments_central[1, 2])
        assert out["AreaShape_SpatialMoment_2_3"][k] == pytest.approx(p.moments[2, 3])
        assert out["AreaShape_HuMoment_3"][k] == pytest.approx(p.moments_hu[3], rel=1e-6, abs=1e-15)
        assert out["AreaShape_InertiaTensorEigenvalues_0"][k] == pytest.approx(p.inertia_tensor_eigvals[0])


def test_degenerate_objects_never_raise():
    lab = np.zeros((20, 20), np.int32)
    lab[0, 0] = 1          # one pixel at the border
    lab[5, 3:9] = 2        # a line
    lab[10:20, 10:20] = 4  # touches the border; label 3 is absent
    out = areashape(lab, None, n_objects=5)
    assert out["AreaShape_Area"].tolist()[:2] == [1, 6]
    assert np.isnan(out["AreaShape_Area"][2]) and np.isnan(out["AreaShape_Area"][4])
    assert np.isnan(out["AreaShape_Zernike_0_0"][0])      # zero enclosing radius, as CellProfiler
    assert out["AreaShape_MinFeretDiameter"][1] == 0.0
    assert out["AreaShape_MaxFeretDiameter"][1] == 5.0
    assert out["AreaShape_MaximumRadius"][0] == 1.0
    assert all(v.shape == (5,) for v in out.values())


def _cp_zernike_shapes():
    yy, xx = np.mgrid[0:40, 0:60]
    lab = np.zeros((40, 60), np.int32)
    lab[(yy - 12) ** 2 + (xx - 14) ** 2 <= 81] = 1                      # disk, lattice points on the circle
    lab[((yy - 20) / 6.5) ** 2 + ((xx - 40) / 13.0) ** 2 <= 1] = 2        # ellipse
    lab[30:37, 3:20] = 3                                                 # rectangle (corners on the circle)
    lab[25:35, 24:30] = 4
    lab[29:31, 24:34] = 4                                                # asymmetric cross
    return lab


# Computed by CellProfiler 5.0.0.dev784's own code (centriole.cpmorphology.minimum_enclosing_circle and
# centriole.zernike.zernike) on _cp_zernike_shapes(), written as float.hex to keep every bit.
_CP_MEC = [('0x1.8000000000000p+3', '0x1.c000000000000p+3', '0x1.2000000000000p+3'),
           ('0x1.4000000000000p+4', '0x1.4000000000000p+5', '0x1.a000000000000p+3'),
           ('0x1.0800000000000p+5', '0x1.6000000000000p+3', '0x1.11687a8ae14a3p+3'),
           ('0x1.d800000000000p+4', '0x1.b638e38e38e39p+4', '0x1.6888b67e44248p+2')]
_CP_IDX = [(0, 0), (6, 2), (8, 0), (9, 1), (9, 9)]
_CP_Z = [['0x1.fd0b5825f79f0p-1', '0x1.526790747cc23p-57', '0x1.6185edf33198bp-8', '0x1.130d95641a9b7p-59',
          '0x1.824f706dc3004p-60'],
         ['0x1.017b0dc0728ffp-1', '0x1.8350e107fc478p-7', '0x1.0fece4b04de79p-6', '0x1.440547f50ebaep-60',
          '0x1.29fe8295adfe8p-64'],
         ['0x1.09abc83912df4p-1', '0x1.d9a9fc24752aap-7', '0x1.e76bbadf991e5p-10', '0x1.5ac8777221027p-58',
          '0x1.3f7e5e90a5e2ap-61'],
         ['0x1.5d37c3d41c143p-1', '0x1.2bb41679dd837p-5', '0x1.1ef6f6ffb481ep-5', '0x1.c68992a093697p-7',
          '0x1.d8c251829c26ep-6']]


def test_zernike_matches_cellprofiler_bit_for_bit_circle():
    """Regression: CellProfiler zeroes the pixels whose normalised ρ² exceeds 1 by round-off (pixels on
    the enclosing circle), so its Zernike values (degree ≥ 6 most visibly) depend on the circle's radius
    to the last bit. We reproduce centrosome's circle algorithm and that rule exactly."""
    from profiler.measure._hull import cp_enclosing_circles
    from profiler.measure._labels import pixel_scan

    lab = _cp_zernike_shapes()
    lab64 = lab.astype(np.int64)
    _, bbox, _, _ = pixel_scan(lab64, 4)
    ci, cj, r = cp_enclosing_circles(lab64, 4, bbox)
    for k, (hi, hj, hr) in enumerate(_CP_MEC, start=1):
        assert (ci[k], cj[k], r[k]) == (float.fromhex(hi), float.fromhex(hj), float.fromhex(hr))
    out = areashape(lab, None, n_objects=4, advanced=False)
    for k in range(4):
        for (nn, mm), want in zip(_CP_IDX, _CP_Z[k]):
            assert out[f"AreaShape_Zernike_{nn}_{mm}"][k] == pytest.approx(float.fromhex(want), rel=1e-9, abs=1e-12)


def test_first_order_central_moments_are_exactly_zero():
    """Regression: they were summed round-off (up to 2e-8 on large cells), uncorrelated with CellProfiler's."""
    lab = np.zeros((300, 300), np.int32)
    lab[ellipse(150, 140, 120, 70, shape=lab.shape, rotation=0.4)] = 1
    out = areashape(lab, None, n_objects=1)
    assert out["AreaShape_CentralMoment_0_1"][0] == 0.0
    assert out["AreaShape_CentralMoment_1_0"][0] == 0.0
