"""CellProfiler's measurements, vectorized over all objects of a label image.

Each family lives in its own module and registers itself (see :mod:`profiler.measure.registry`).
:func:`measure_objects` runs the selected families on one compartment and returns a table whose
columns carry the compartment prefix (``Nuclei_AreaShape_Area``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# Importing a family module registers it. Keep this list in CellProfiler's module order.
from profiler.measure import (  # noqa: F401
    areashape, correlation, granularity, intensity, location, neighbors, radial, texture,
)
from profiler.measure._util import ImageCache, LabelContext
from profiler.measure.registry import FeatureDoc, families, get_family, register

DEFAULT_FAMILIES = ("AreaShape", "Intensity", "RadialDistribution", "Texture", "Granularity", "Correlation",
                    "Neighbors", "Location")

__all__ = ["FeatureDoc", "families", "get_family", "register", "measure_objects", "DEFAULT_FAMILIES",
           "ImageCache"]


@functools.lru_cache(maxsize=None)
def _takes_context(fn) -> bool:
    """Whether a family function accepts the shared ``context`` (its signature read once)."""
    return "context" in inspect.signature(fn).parameters


def measure_objects(
    labels: np.ndarray,
    images: Mapping[str, np.ndarray],
    *,
    compartment: str,
    families: Sequence[str] = DEFAULT_FAMILIES,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    n_objects: int | None = None,
    image_cache: ImageCache | None = None,
) -> pd.DataFrame:
    """Measure every object of ``labels`` with the named families.

    Parameters
    ----------
    labels:
        (H, W) integer label image, objects 1..n_objects.
    images:
        channel name → (H, W) float image on CellProfiler's scale (raw / dtype max).
    compartment:
        Prefix of the feature names, e.g. ``"Nuclei"``.
    families:
        Registered family names to run, in order.
    params:
        family name → keyword parameters for that family (merged over its defaults).
    n_objects:
        Number of rows; defaults to ``labels.max()``. Objects absent from ``labels`` get NaN.
    image_cache:
        The site's :class:`ImageCache`: pass the same one for every compartment of a site so that
        whole-image intermediates (Granularity's spectrum, Correlation's levels and Costes
        thresholds) are computed once per site; a new one (this call only) when not given.

    Returns
    -------
    DataFrame with one row per object (row i = object i + 1) and ``<compartment>_<feature>`` columns.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    for name, img in images.items():
        if np.shape(img) != labels.shape:
            raise ValueError(f"image {name!r} has shape {np.shape(img)}, labels {labels.shape}")
    n = int(labels.max()) if n_objects is None else int(n_objects)
    params = params or {}
    columns: dict[str, np.ndarray] = {}
    # intermediates shared by the families that accept a ``context`` (pixel lists, hulls, EDTs)
    context = LabelContext(labels, n, image_cache)
    for fam_name in families:
        fam = get_family(fam_name)
        kw = {**fam.defaults, **params.get(fam_name, {})}
        if _takes_context(fam.fn):
            kw["context"] = context
        out = fam.fn(labels, images, n_objects=n, **kw)
        for key, values in out.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (n,):
                raise RuntimeError(f"family {fam_name} returned {key} with shape {values.shape}, expected ({n},)")
            columns[f"{compartment}_{key}"] = values
    # one float64 block (one DataFrame block instead of a column-by-column build); undefined values
    # (e.g. FormFactor of an object with zero perimeter) are NaN, never ±inf, so that every
    # downstream table holds finite numbers or NaN
    block = np.empty((n, len(columns)), np.float64)
    for c, values in enumerate(columns.values()):
        block[:, c] = values
    block[np.isinf(block)] = np.nan
    return pd.DataFrame(block, columns=list(columns), index=pd.RangeIndex(n), copy=False)
