"""Neighbors: touching squares, distance scales, closest objects."""

import numpy as np
import pytest

from cellfusion_core.errors import ConfigError
from profiler.measure.neighbors import neighbors


def _three():
    lab = np.zeros((40, 60), np.int32)
    lab[10:20, 10:20] = 1
    lab[10:20, 20:30] = 2      # touches 1 along a whole side
    lab[10:20, 33:43] = 3      # 3 px gap to object 2
    return lab


def test_adjacent_and_within_distance():
    out = neighbors(_three(), None, n_objects=3, scales=["Adjacent", 4])
    assert out["Neighbors_NumberOfNeighbors_Adjacent"].tolist() == [1, 1, 0]
    assert out["Neighbors_NumberOfNeighbors_4"].tolist() == [1, 2, 1]
    # 10 of object 1's 36 outline pixels touch object 2
    assert out["Neighbors_PercentTouching_Adjacent"][0] == pytest.approx(100 * 10 / 36)
    assert out["Neighbors_PercentTouching_Adjacent"][2] == 0.0
    assert out["Neighbors_FirstClosestObjectNumber_Adjacent"].tolist() == [2, 1, 2]
    assert out["Neighbors_FirstClosestDistance_Adjacent"][0] == pytest.approx(10.0)
    assert out["Neighbors_SecondClosestDistance_Adjacent"][0] == pytest.approx(23.0)
    # collinear centres: the angle at object 2 between 1 and 3 is 180°, at object 1 it is 0°
    assert out["Neighbors_AngleBetweenNeighbors_Adjacent"][1] == pytest.approx(180.0)
    assert out["Neighbors_AngleBetweenNeighbors_Adjacent"][0] == pytest.approx(0.0, abs=1e-6)


def test_expanded_makes_gapped_objects_adjacent():
    out = neighbors(_three(), None, n_objects=3, scales=["Expanded"])
    assert out["Neighbors_NumberOfNeighbors_Expanded"].tolist() == [1, 2, 1]


def test_single_object_and_absent_rows():
    lab = np.zeros((10, 10), np.int32)
    lab[2:5, 2:5] = 1
    out = neighbors(lab, None, n_objects=2)
    assert out["Neighbors_NumberOfNeighbors_Adjacent"][0] == 0
    assert out["Neighbors_FirstClosestDistance_Adjacent"][0] == 0
    assert np.isnan(out["Neighbors_NumberOfNeighbors_Adjacent"][1])


def test_bad_scale_is_a_config_error():
    with pytest.raises(ConfigError):
        neighbors(_three(), None, n_objects=3, scales=["Nearby"])


def test_scan_of_the_labelled_pixels_equals_the_whole_scan():
    """Neighbors' outline/touching counts and neighbour codes from the labelled pixels only == the
    scan of every pixel (borders, touching objects, labels above n, distance scales)."""
    from profiler.measure._util import object_pixels
    from profiler.measure.neighbors import _disk_offsets, _scan, _scan_at

    rng = np.random.default_rng(61)
    for shape in ((1, 1), (3, 9), (24, 21)):
        lab = rng.integers(0, 7, shape).astype(np.int64)
        lab[lab == 3] = 0
        for n in (1, 5, 6):
            lab_n = np.where(lab <= n, lab, 0)
            idx, _ = object_pixels(lab_n, n)
            for d in (1, 2, 4):
                oi, oj = _disk_offsets(d)
                ti, tj = _disk_offsets(d + 0.5)
                ref = _scan(lab_n, n, oi, oj, ti, tj)
                got = _scan_at(lab_n, n, oi, oj, ti, tj, idx)
                np.testing.assert_array_equal(got[0], ref[0])
                np.testing.assert_array_equal(got[1], ref[1])
                np.testing.assert_array_equal(np.unique(got[2]), np.unique(ref[2]))
