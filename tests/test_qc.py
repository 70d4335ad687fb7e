"""Image QC: focus score behaves like CellProfiler's PowerLogLogSlope, saturation, outlier flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from profiler.qc import QC_OUTLIER, QC_REASONS, flag_outliers, image_quality, power_log_log_slope


def _texture(seed=0, shape=(256, 256)):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.0).astype(np.float32)


def test_blur_lowers_power_log_log_slope():
    img = _texture()
    slopes = [power_log_log_slope(ndi.gaussian_filter(img, s)) for s in (0, 2, 4)]
    assert slopes[0] > slopes[1] > slopes[2]
    assert power_log_log_slope(np.zeros((64, 64))) == 0.0


def test_saturation_columns():
    img = _texture() * 0.5
    img[:10, :10] = 1.0
    q = image_quality({"DNA": img})
    assert np.isclose(q["ImageQuality_PercentSaturated_DNA"], 100 * 100 / img.size)
    assert np.isclose(q["ImageQuality_PercentMaximal_DNA"], 100 * 100 / img.size)
    assert set(q) == {f"ImageQuality_{k}_DNA" for k in ("PowerLogLogSlope", "PercentMaximal", "PercentMinimal",
                                                         "PercentSaturated")}


def test_flag_outliers_keeps_every_site():
    rows = []
    for i in range(12):
        img = _texture(i)
        if i == 3:
            img = ndi.gaussian_filter(img, 4)       # out of focus
        if i == 7:
            img = img.copy()
            img[:40, :40] = 1.0                     # saturated
        rows.append({"Metadata_Plate": "P", "Metadata_Well": f"A{i + 1:02d}", "Metadata_Site": 1,
                     "Metadata_Status": "ok", "Count_Cells": 500 if i == 9 else 100 + i, **image_quality({"DNA": img})})
    rows.append({"Metadata_Plate": "P", "Metadata_Well": "B01", "Metadata_Site": 1, "Metadata_Status": "incomplete",
                 "Count_Cells": 0})
    out = flag_outliers(pd.DataFrame(rows))
    assert len(out) == 13                           # nothing dropped
    flagged = out.loc[out[QC_OUTLIER], "Metadata_Well"].tolist()
    assert flagged == ["A04", "A08", "A10"]
    reasons = out.set_index("Metadata_Well")[QC_REASONS]
    assert "blur DNA" in reasons["A04"] and "saturation DNA" in reasons["A08"]  # (A08 may also read as blur)
    assert "cell count 500" in reasons["A10"]
    assert reasons["B01"] == ""


def _reference_mad(image):
    img = np.asarray(image, np.float64)
    return np.median(np.abs(img - img.mean()))


def test_median_abs_deviation_of_grid_images_is_numpys():
    # PowerLogLogSlope's scale: the median absolute deviation from the mean, taken from the counts
    # of the 16-bit levels when the image is on that grid; the same value as np.median for even and
    # odd pixel counts, 8- and 16-bit data, few levels (many ties) and a constant image
    from profiler.plate import to_intensity
    from profiler.qc import median_abs_deviation

    rng = np.random.default_rng(7)
    cases = [to_intensity(rng.integers(0, 4096, (64, 80)).astype(np.uint16)),     # 12-bit data, even n
             to_intensity(rng.integers(0, 65536, (63, 81)).astype(np.uint16)),    # 16-bit, odd n
             to_intensity(rng.integers(0, 256, (31, 33)).astype(np.uint8)),       # 8-bit
             to_intensity(rng.integers(100, 104, (40, 40)).astype(np.uint16)),    # 4 levels: ties
             to_intensity(np.full((10, 12), 77, np.uint16)),                     # constant
             to_intensity(rng.integers(0, 4096, (1, 1)).astype(np.uint16))]
    for image in cases:
        img = image.astype(np.float64)
        want = _reference_mad(image)
        got = median_abs_deviation(image, img, img.mean())
        assert np.float64(got).tobytes() == np.float64(want).tobytes(), (image.shape, got, want)


def test_median_abs_deviation_off_the_grid_falls_back_to_numpy():
    from profiler.qc import median_abs_deviation

    rng = np.random.default_rng(8)
    off = rng.random((50, 60)).astype(np.float32)                       # any float32 values
    near = np.full((20, 20), np.float32(1000 / 65535))                  # one level, two values
    near[0, 0] = np.nextafter(near[0, 0], np.float32(1))
    for image in (off, near, rng.random((30, 30))):                     # … and a float64 image
        img = image.astype(np.float64)
        got = median_abs_deviation(image, img, img.mean())
        assert np.float64(got).tobytes() == np.float64(_reference_mad(image)).tobytes()


def test_power_log_log_slope_of_a_real_field_is_unchanged():
    # the slope of every channel of a BBBC021 field, with the scale from the level counts, is the one
    # computed with np.median (the same bits)
    from conftest import require_shared
    from profiler import qc
    from profiler.plate import read_image

    folder = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    files = sorted(folder.glob("*_s1_w*.tif"))
    assert files
    real = qc.median_abs_deviation
    for f in files:
        image = read_image(f)
        got = qc.power_log_log_slope(image)
        try:
            qc.median_abs_deviation = lambda image, img, center: np.median(np.abs(img - center))
            want = qc.power_log_log_slope(image)
        finally:
            qc.median_abs_deviation = real
        assert got == want, f.name
