"""AreaShape — MeasureObjectSizeShape (first version: the basic size and shape features).

TODO(issue 4) is tracked in the issue, not here: this module is extended to the full family.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import regionprops_table

from profiler.measure._util import nan_where_empty, object_pixels, per_object_count
from profiler.measure.registry import FeatureDoc, register

_PROPS = {
    "perimeter": "Perimeter",
    "eccentricity": "Eccentricity",
    "major_axis_length": "MajorAxisLength",
    "minor_axis_length": "MinorAxisLength",
    "solidity": "Solidity",
    "extent": "Extent",
}


@register("AreaShape", description="MeasureObjectSizeShape: size and shape of each object",
          features=[FeatureDoc("AreaShape_Area", "number of pixels in the object", "pixels²"),
                    FeatureDoc("AreaShape_Perimeter", "length of the object's outline", "pixels"),
                    FeatureDoc("AreaShape_FormFactor", "4π·Area / Perimeter²", "dimensionless"),
                    FeatureDoc("AreaShape_Eccentricity", "eccentricity of the ellipse with the same second moments", "dimensionless"),
                    FeatureDoc("AreaShape_MajorAxisLength", "major axis of that ellipse", "pixels"),
                    FeatureDoc("AreaShape_MinorAxisLength", "minor axis of that ellipse", "pixels"),
                    FeatureDoc("AreaShape_Solidity", "Area / convex hull area", "dimensionless"),
                    FeatureDoc("AreaShape_Extent", "Area / bounding box area", "dimensionless")])
def areashape(labels: np.ndarray, images=None, *, n_objects: int) -> dict[str, np.ndarray]:
    _, lab = object_pixels(labels, n_objects)
    area = per_object_count(lab, n_objects)
    out = {"AreaShape_Area": nan_where_empty(area, area)}
    table = regionprops_table(np.where(labels <= n_objects, labels, 0), properties=["label", *_PROPS])
    for key, name in _PROPS.items():
        col = np.full(n_objects, np.nan)
        col[table["label"] - 1] = table[key]
        out[f"AreaShape_{name}"] = col
    with np.errstate(divide="ignore", invalid="ignore"):
        out["AreaShape_FormFactor"] = 4 * np.pi * out["AreaShape_Area"] / out["AreaShape_Perimeter"] ** 2
    return out
