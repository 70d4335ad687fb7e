"""One row per well (pycytominer's ``aggregate``) and one row per treatment (pycytominer's ``consensus``).

:func:`aggregate` is the in-memory form; per-cell Parquet that does not fit in memory is aggregated
by the streaming engine :func:`profiler.profiles.aggregate_stream.aggregate_parquet` (exact per-well medians
and means, memory bounded by a budget), re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pycytominer

from cellfusion_core.errors import ConfigError
from cellfusion_core.names import (
    CELL_COUNT,
    OBJECT_NUMBER,
    feature_columns,
    metadata_columns,
    profile_feature_columns,
)
from profiler.profiles.aggregate_stream import aggregate_parquet

from .checks import DEFAULT_STRATA, check_features, check_strata

__all__ = ["DEFAULT_STRATA", "aggregate", "aggregate_parquet", "consensus"]


def aggregate(single_cell: pd.DataFrame, *, strata: Sequence[str] = DEFAULT_STRATA,
              operation: str = "median", features: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per well: ``operation`` (median or mean) of every profile feature over the well's cells.

    ``pycytominer.aggregate`` with checks. ``features`` default:
    :func:`cellfusion_core.names.profile_feature_columns` — position and numbering
    columns (``Location_*``, ``AreaShape_Center_*``, ``Parent_*`` …) stay in the per-cell table but
    are not aggregated. Metadata columns that are constant within a well are carried over; the number
    of cells per well is ``Metadata_Object_Count`` (pycytominer's name). NaN values are skipped.
    """
    if operation not in ("median", "mean"):
        raise ConfigError(f"unknown aggregate operation {operation!r}", hint="use 'median' or 'mean'")
    check_strata(single_cell, strata)
    feats = check_features(single_cell, features if features is not None else profile_feature_columns(single_cell),
                           what="single-cell table")
    has_obj = OBJECT_NUMBER in single_cell.columns
    agg = pycytominer.aggregate(single_cell, strata=list(strata), features=feats, operation=operation,
                                compute_object_count=has_obj, object_feature=OBJECT_NUMBER, output_type=None)
    if not has_obj:
        counts = single_cell.groupby(list(strata)).size().rename(CELL_COUNT).reset_index()
        agg = counts.merge(agg, on=list(strata), how="right")
    return _carry_metadata(single_cell, agg, strata)


def _carry_metadata(source: pd.DataFrame, agg: pd.DataFrame, strata: Sequence[str]) -> pd.DataFrame:
    meta = [c for c in metadata_columns(source) if c not in strata and c not in agg.columns]
    if meta:
        const = source.groupby(list(strata), sort=False)[meta].nunique(dropna=False).le(1).all()
        keep = [c for c in meta if const.get(c, False)]
        if keep:
            first = source.groupby(list(strata), sort=False)[keep].first().reset_index()
            agg = first.merge(agg, on=list(strata), how="right")
    cols = metadata_columns(agg) + feature_columns(agg)
    return agg[cols]


def consensus(profiles: pd.DataFrame, *, replicate_columns: Sequence[str], operation: str = "median",
              **kwargs: Any) -> pd.DataFrame:
    """One profile per treatment (pycytominer.consensus: median, mean or modz of the replicates)."""
    check_strata(profiles, replicate_columns)
    feats = check_features(profiles, what="profile table")
    out = pycytominer.consensus(profiles, replicate_columns=list(replicate_columns), operation=operation,
                                features=feats, output_type=None, **kwargs)
    return out
