"""Intensity — MeasureObjectIntensity (first version: integrated, mean, std, min, max)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from profiler.measure._util import nan_where_empty, object_pixels, per_object_count, per_object_sum
from profiler.measure.registry import FeatureDoc, register

_U = "intensity (raw / dtype max)"


@register("Intensity", description="MeasureObjectIntensity: intensity statistics per object and channel",
          features=[FeatureDoc("Intensity_IntegratedIntensity_{channel}", "sum of pixel intensities", _U),
                    FeatureDoc("Intensity_MeanIntensity_{channel}", "mean pixel intensity", _U),
                    FeatureDoc("Intensity_StdIntensity_{channel}", "standard deviation of pixel intensities", _U),
                    FeatureDoc("Intensity_MinIntensity_{channel}", "minimum pixel intensity", _U),
                    FeatureDoc("Intensity_MaxIntensity_{channel}", "maximum pixel intensity", _U)])
def intensity(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int) -> dict[str, np.ndarray]:
    idx, lab = object_pixels(labels, n_objects)
    count = per_object_count(lab, n_objects)
    out: dict[str, np.ndarray] = {}
    for ch, img in images.items():
        v = np.asarray(img, dtype=np.float64).ravel()[idx]
        s = per_object_sum(lab, v, n_objects)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s / count
            var = per_object_sum(lab, v * v, n_objects) / count - mean ** 2
        mn = np.full(n_objects + 1, np.inf)
        np.minimum.at(mn, lab, v)
        mx = np.full(n_objects + 1, -np.inf)
        np.maximum.at(mx, lab, v)
        out[f"Intensity_IntegratedIntensity_{ch}"] = nan_where_empty(s, count)
        out[f"Intensity_MeanIntensity_{ch}"] = nan_where_empty(mean, count)
        out[f"Intensity_StdIntensity_{ch}"] = nan_where_empty(np.sqrt(np.maximum(var, 0)), count)
        out[f"Intensity_MinIntensity_{ch}"] = nan_where_empty(mn[1:], count)
        out[f"Intensity_MaxIntensity_{ch}"] = nan_where_empty(mx[1:], count)
    return out
