"""Intensity: CellProfiler's quartile convention on known pixel sets, edges, degenerate objects."""

import numpy as np
import pytest

from profiler.measure.intensity import intensity


def _cp_quartile(values, f):
    v = np.sort(values)
    q = len(v) * f
    i = int(np.floor(q))
    return v[i] if i >= len(v) - 1 else v[i] * (1 - (q - i)) + v[i + 1] * (q - i)


def test_quartiles_follow_cellprofiler_convention():
    lab = np.zeros((4, 5), np.int32)
    lab[0, :5] = 1                    # 5 pixels
    lab[2, :4] = 2                    # 4 pixels
    img = np.zeros((4, 5), np.float32)
    img[0, :5] = [0.5, 0.1, 0.4, 0.2, 0.3]
    img[2, :4] = [0.8, 0.2, 0.6, 0.4]
    out = intensity(lab, {"C": img}, n_objects=2)
    # object 1: sorted .1 .2 .3 .4 .5 ; n·f = 1.25, 2.5, 3.75
    assert out["Intensity_LowerQuartileIntensity_C"][0] == pytest.approx(0.2 * 0.75 + 0.3 * 0.25)
    assert out["Intensity_MedianIntensity_C"][0] == pytest.approx(0.35)  # not numpy's 0.3
    assert out["Intensity_UpperQuartileIntensity_C"][0] == pytest.approx(0.4 * 0.25 + 0.5 * 0.75)
    for k, vals in ((0, img[0, :5]), (1, img[2, :4])):
        for name, f in (("LowerQuartile", 0.25), ("Median", 0.5), ("UpperQuartile", 0.75)):
            assert out[f"Intensity_{name}Intensity_C"][k] == pytest.approx(_cp_quartile(vals, f))
    # MAD: true median of |v − MedianIntensity|
    med = out["Intensity_MedianIntensity_C"][1]
    assert out["Intensity_MADIntensity_C"][1] == pytest.approx(np.median(np.abs(img[2, :4] - med)))
    assert out["Intensity_IntegratedIntensity_C"][0] == pytest.approx(1.5)
    assert out["Intensity_StdIntensity_C"][0] == pytest.approx(np.std(img[0, :5]))


def test_edges_center_of_mass_and_max_location():
    lab = np.zeros((10, 10), np.int32)
    lab[2:7, 2:7] = 1
    img = np.zeros((10, 10), np.float32)
    img[2:7, 2:7] = 0.1
    img[4, 4] = 0.9          # interior bright pixel
    img[2, 6] = 0.2          # an edge pixel
    out = intensity(lab, {"C": img}, n_objects=1)
    assert out["Intensity_MaxIntensityEdge_C"][0] == pytest.approx(0.2)
    assert out["Intensity_MinIntensityEdge_C"][0] == pytest.approx(0.1)
    assert out["Intensity_MeanIntensityEdge_C"][0] == pytest.approx((15 * 0.1 + 0.2) / 16)
    assert out["Location_MaxIntensity_X_C"][0] == 4 and out["Location_MaxIntensity_Y_C"][0] == 4
    tot = img[lab > 0].sum()
    ii, jj = np.nonzero(lab)
    cx = (jj * img[ii, jj]).sum() / tot
    assert out["Location_CenterMassIntensity_X_C"][0] == pytest.approx(cx)
    assert out["Intensity_MassDisplacement_C"][0] == pytest.approx(
        np.hypot(cx - jj.mean(), (ii * img[ii, jj]).sum() / tot - ii.mean()))


def test_image_border_is_not_an_edge():
    lab = np.ones((3, 3), np.int32)   # fills the image: no edge pixels, as find_boundaries(mode="inner")
    out = intensity(lab, {"C": np.full((3, 3), 0.5, np.float32)}, n_objects=1)
    assert out["Intensity_IntegratedIntensityEdge_C"][0] == 0.0


def test_degenerate_objects():
    lab = np.zeros((8, 8), np.int32)
    lab[0, 0] = 1            # one pixel on the border
    lab[3:6, 3:6] = 2        # zero intensity
    # label 3 absent
    img = np.zeros((8, 8), np.float32)
    img[0, 0] = 0.3
    out = intensity(lab, {"C": img, "K": np.full((8, 8), 0.25, np.float32)}, n_objects=3)
    assert out["Intensity_MedianIntensity_C"][0] == pytest.approx(0.3)
    assert out["Intensity_MADIntensity_C"][0] == 0.0
    assert out["Intensity_IntegratedIntensity_C"][1] == 0.0
    assert np.isnan(out["Intensity_MassDisplacement_C"][1])   # 0/0 as CellProfiler
    assert np.isnan(out["Intensity_MeanIntensity_C"][2])
    assert out["Intensity_StdIntensity_K"][1] == 0.0           # constant channel
    assert all(v.shape == (3,) for v in out.values())


def test_edge_flags_of_the_object_pixels_equal_the_edge_image():
    """Intensity's edge pixels computed at the labelled pixels only == the whole edge image there
    (image borders, touching objects, 1-pixel objects, labels above n)."""
    from profiler.measure._util import object_pixels
    from profiler.measure.intensity import _edge_mask, _edge_of_pixels

    rng = np.random.default_rng(51)
    for shape in ((1, 1), (1, 7), (6, 1), (19, 23)):
        for _ in range(4):
            lab = rng.integers(0, 5, shape).astype(np.int64)
            for n in (2, 4):
                idx, _ = object_pixels(lab, n)
                np.testing.assert_array_equal(_edge_of_pixels(lab, idx), _edge_mask(lab).ravel()[idx])
