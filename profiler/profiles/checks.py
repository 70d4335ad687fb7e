"""Input checks shared by every profile step: feature columns numeric and finite, grouping columns present."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellfusion_core.errors import InputError
from cellfusion_core.names import PLATE, WELL, feature_columns

DEFAULT_STRATA = (PLATE, WELL)


def check_features(df: pd.DataFrame, features: Sequence[str] | None = None, *, what: str = "table",
                   allow_nan: bool = True) -> list[str]:
    """The feature columns, after checking they are numeric and (unless allowed) finite."""
    feats = list(features) if features is not None else feature_columns(df)
    if not feats:
        raise InputError(f"the {what} has no feature columns",
                         hint="features are every column not starting with 'Metadata_'")
    dtypes = df.dtypes if df.columns.is_unique else None  # one lookup per column, not one df[c] each
    bad = [c for c in feats
           if not (pd.api.types.is_numeric_dtype(dtypes[c] if dtypes is not None else df[c])
                   or pd.api.types.is_bool_dtype(dtypes[c] if dtypes is not None else df[c]))]
    if bad:
        raise InputError(f"the {what} has non-numeric feature columns: {bad[:5]}"
                         + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
                         hint="prefix metadata columns with 'Metadata_' or drop these columns")
    x = df[feats].to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(x).any(axis=0)
    if inf.any():
        cols = [c for c, b in zip(feats, inf) if b]
        raise InputError(f"the {what} has infinite values in {len(cols)} feature columns, e.g. {cols[:3]}",
                         hint="replace inf by NaN (or drop these columns) before profiling")
    if not allow_nan:
        nan = np.isnan(x).any(axis=0)
        if nan.any():
            cols = [c for c, b in zip(feats, nan) if b]
            raise InputError(f"the {what} has NaN values in {len(cols)} feature columns, e.g. {cols[:3]}",
                             hint="use feature_select with drop_na_columns, or impute them")
    return feats


def check_strata(df: pd.DataFrame, strata: Sequence[str]) -> None:
    """An :class:`InputError` naming the grouping columns ``df`` lacks."""
    missing = [c for c in strata if c not in df.columns]
    if missing:
        raise InputError(f"the table lacks the grouping columns {missing}",
                         hint=f"per-cell tables need {list(DEFAULT_STRATA)}")
