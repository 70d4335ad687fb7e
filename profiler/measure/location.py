"""Location — the object centre CellProfiler's Identify modules record (Location_Center_X/Y)."""

from __future__ import annotations

import numpy as np

from profiler.measure._util import object_pixels
from profiler.measure.registry import FeatureDoc, register


@register("Location", description="Object centre (centroid) in image coordinates",
          features=[FeatureDoc("Location_Center_X", "mean column of the object's pixels", "pixels"),
                    FeatureDoc("Location_Center_Y", "mean row of the object's pixels", "pixels")])
def location(labels: np.ndarray, images=None, *, n_objects: int) -> dict[str, np.ndarray]:
    n = int(n_objects)
    idx, lab = object_pixels(np.asarray(labels), n)
    ii, jj = np.divmod(idx, np.asarray(labels).shape[1])
    cnt = np.bincount(lab, minlength=n + 1)[1:n + 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = np.bincount(lab, jj.astype(np.float64), minlength=n + 1)[1:n + 1] / cnt
        cy = np.bincount(lab, ii.astype(np.float64), minlength=n + 1)[1:n + 1] / cnt
    return {"Location_Center_X": cx, "Location_Center_Y": cy}
