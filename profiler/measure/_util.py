"""Small helpers shared by the feature families (bincount-based per-object reductions)."""

from __future__ import annotations

import numpy as np


def object_pixels(labels: np.ndarray, n_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of labelled pixels (label ≤ n_objects) and their labels."""
    flat = labels.ravel()
    idx = np.flatnonzero((flat > 0) & (flat <= n_objects))
    return idx, flat[idx].astype(np.intp)


def per_object_sum(lab: np.ndarray, values: np.ndarray, n_objects: int) -> np.ndarray:
    """Sum of ``values`` per object 1..n_objects (``lab`` = label of each value)."""
    return np.bincount(lab, weights=values, minlength=n_objects + 1)[1:n_objects + 1]


def per_object_count(lab: np.ndarray, n_objects: int) -> np.ndarray:
    return np.bincount(lab, minlength=n_objects + 1)[1:n_objects + 1].astype(np.float64)


def nan_where_empty(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Replace entries of objects with no pixels by NaN."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[count == 0] = np.nan
    return out
