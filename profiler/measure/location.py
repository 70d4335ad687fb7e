"""Location — the object centre CellProfiler's Identify modules record (Location_Center_X/Y)."""

from __future__ import annotations

import numpy as np

from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register


@register("Location", description="Object centre (centroid) in image coordinates",
          features=[FeatureDoc("Location_Center_X", "mean column of the object's pixels", "pixels"),
                    FeatureDoc("Location_Center_Y", "mean row of the object's pixels", "pixels")])
def location(labels: np.ndarray, images=None, *, n_objects: int,
             context: LabelContext | None = None) -> dict[str, np.ndarray]:
    n = int(n_objects)
    ctx = label_context(labels, n, context)
    ci, cj = ctx.centroid()
    return {"Location_Center_X": cj[1:n + 1].copy(), "Location_Center_Y": ci[1:n + 1].copy()}
