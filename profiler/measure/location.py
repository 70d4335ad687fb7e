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
    """Centre of every object (``Location_Center_X`` = mean column, ``Location_Center_Y`` = mean
    row of its pixels), as CellProfiler's Identify modules record it for the objects they create.

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images`` is ignored; ``context``, the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings: none.
    """
    n = int(n_objects)
    ctx = label_context(labels, n, context)
    ci, cj = ctx.centroid()
    return {"Location_Center_X": cj[1:n + 1].copy(), "Location_Center_Y": ci[1:n + 1].copy()}
