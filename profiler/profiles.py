"""Per-well profiles with pycytominer: aggregate → normalize to controls → select features.

Our code adapts and orchestrates; the operations themselves are pycytominer's.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pycytominer

from profiler.errors import InputError
from profiler.names import CONTROL, PLATE, WELL, feature_columns, metadata_columns

DEFAULT_STRATA = (PLATE, WELL)
NEGATIVE_CONTROL_QUERY = f"{CONTROL} == 'negative'"


def aggregate(single_cell: pd.DataFrame, *, strata: Sequence[str] = DEFAULT_STRATA,
              operation: str = "median") -> pd.DataFrame:
    """One row per well: ``operation`` (median or mean) of every feature over the well's cells.

    Metadata columns that are constant within a well are carried over; the number of cells per
    well is ``Metadata_Object_Count`` (pycytominer's name).
    """
    feats = feature_columns(single_cell)
    if not feats:
        raise InputError("the single-cell table has no feature columns")
    agg = pycytominer.aggregate(single_cell, strata=list(strata), features=feats, operation=operation,
                                compute_object_count=True, output_type=None)
    meta = [c for c in metadata_columns(single_cell) if c not in strata]
    const = single_cell.groupby(list(strata), sort=False)[meta].nunique(dropna=False).le(1).all()
    keep = [c for c in meta if const.get(c, False)]
    if keep:
        first = single_cell.groupby(list(strata), sort=False)[keep].first().reset_index()
        agg = first.merge(agg, on=list(strata), how="right")
    cols = metadata_columns(agg) + feature_columns(agg)
    return agg[cols]


def normalize(profiles: pd.DataFrame, *, method: str = "mad_robustize",
              samples: str = NEGATIVE_CONTROL_QUERY, by: str | None = PLATE) -> pd.DataFrame:
    """Normalize each plate (``by``) to the wells selected by ``samples`` (pycytominer query)."""
    feats = feature_columns(profiles)
    parts = []
    groups = profiles.groupby(by, sort=False) if by else [(None, profiles)]
    for key, plate in groups:
        if samples != "all" and plate.query(samples).empty:
            raise InputError(f"plate {key!r} has no control wells matching {samples!r}",
                             hint="mark negative-control wells (control = negative in the platemap), "
                                  "or normalize to the whole plate with samples='all'")
        parts.append(pycytominer.normalize(plate, features=feats, meta_features=metadata_columns(plate),
                                           samples=samples, method=method, output_type=None))
    return pd.concat(parts, ignore_index=True)


def feature_select(profiles: pd.DataFrame, *, operations: Sequence[str] = ("variance_threshold", "drop_na_columns"),
                   **kwargs) -> pd.DataFrame:
    """pycytominer feature selection over the feature columns."""
    return pycytominer.feature_select(profiles, features=feature_columns(profiles),
                                      operation=list(operations), output_type=None, **kwargs)


def build_profiles(single_cell: pd.DataFrame, *, aggregate_operation: str = "median",
                   normalize_method: str = "mad_robustize", samples: str = NEGATIVE_CONTROL_QUERY,
                   feature_select_operations: Sequence[str] = ("variance_threshold", "drop_na_columns")
                   ) -> pd.DataFrame:
    """aggregate → normalize → feature_select, the default recipe of ``profiler extract``."""
    prof = aggregate(single_cell, operation=aggregate_operation)
    prof = normalize(prof, method=normalize_method, samples=samples)
    if feature_select_operations:
        prof = feature_select(prof, operations=feature_select_operations)
    return prof
