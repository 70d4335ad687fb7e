"""Column-wise NaN-aware order statistics of 2-D float arrays: NumPy's values, vectorized.

``np.nanmedian(a, axis=0)`` (from 600 rows on) and ``np.nanpercentile(a, q, axis=0)`` (always)
call a Python function per column through ``apply_along_axis``: ~90 µs a column, 0.14 s for the
1,500 features of a profile table. A column without NaN gives the same statistic as
``np.median`` / ``np.percentile`` of it, which NumPy computes for all such columns at once with the
same arithmetic (the same order statistics, interpolated or averaged the same way), so these
functions do that and leave only the columns that hold a NaN to NumPy's NaN-aware path.
tests/test_plate_speedups.py checks the bits against NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _split(a: np.ndarray) -> np.ndarray | None:
    """The columns holding a NaN, or None when the fast path does not apply."""
    if a.ndim != 2 or a.dtype != np.float64 or a.shape[1] == 0 or a.shape[0] == 0:
        return None
    nan_cols = np.isnan(a).any(axis=0)
    return None if nan_cols.all() else nan_cols


def nanmedian_columns(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)``, the same values (below 600 rows NumPy's own masked-array path,
    already vectorized, is used as is)."""
    nan_cols = _split(a) if a.ndim == 2 and a.shape[0] >= 600 else None
    if nan_cols is None:
        return np.nanmedian(a, axis=0)
    out = np.empty(a.shape[1], dtype=np.float64)
    clean = ~nan_cols
    out[clean] = np.median(a[:, clean].T, axis=1)  # (each column sorted contiguously: 2× faster than axis=0)
    if nan_cols.any():
        out[nan_cols] = np.nanmedian(a[:, nan_cols], axis=0)
    return out


def nanpercentile_columns(a: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.nanpercentile(a, q, axis=0)`` for a sequence of percentiles ``q``: shape (len(q), columns),
    the same values."""
    nan_cols = _split(a)
    if nan_cols is None:
        return np.nanpercentile(a, q, axis=0)
    q = np.asarray(q, dtype=np.float64)
    out = np.empty((len(q), a.shape[1]), dtype=np.float64)
    clean = ~nan_cols
    out[:, clean] = np.percentile(a[:, clean], q, axis=0)
    if nan_cols.any():
        out[:, nan_cols] = np.nanpercentile(a[:, nan_cols], q, axis=0)
    return out
