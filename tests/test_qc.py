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
