"""Which features to keep: pycytominer's ``feature_select`` (with pattern blocklists) and a reproducibility filter.

* :func:`feature_select` — ``pycytominer.feature_select`` (variance_threshold,
  correlation_threshold, drop_na_columns, blocklist, drop_outliers, noise_removal) with checks;
  ``blocklist`` patterns (e.g. :data:`POSITION_BLOCKLIST`) are expanded to the table's columns by
  :func:`expand_blocklist` and handed to pycytominer's ``blocklist`` operation;
* :func:`select_reproducible` — features that replicate wells reproduce (eta² over treatments,
  by treatment identity only; no pycytominer counterpart).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pycytominer

from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import COMPOUND, CONCENTRATION, NON_PHENOTYPE_PATTERN, PLATE, feature_columns, metadata_columns

from .checks import check_features, check_strata
from .reference import CONTROLS, reference_mask

log = logging.getLogger(__name__)

FEATURE_SELECT_OPERATIONS = ("variance_threshold", "correlation_threshold", "drop_na_columns",
                             "blocklist", "drop_outliers", "noise_removal")

#: Features that describe where a cell is or how it is numbered, not what it looks like: the one
#: definition in :mod:`cellfusion_core.names` (``is_profile_feature``) as a blocklist pattern.
POSITION_BLOCKLIST = (NON_PHENOTYPE_PATTERN,)


def expand_blocklist(columns: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Feature columns matching any of the regular expressions (or exact names) in ``patterns``."""
    regs = [re.compile(p) for p in patterns]
    return [c for c in feature_columns(columns) if any(r.search(c) for r in regs)]


def feature_select(profiles: pd.DataFrame, *, operations: Sequence[str] = ("variance_threshold", "drop_na_columns"),
                   samples: str = "all", blocklist: Sequence[str] | None = None, **kwargs: Any) -> pd.DataFrame:
    """pycytominer feature selection over the feature columns.

    ``operations`` ⊆ :data:`FEATURE_SELECT_OPERATIONS`. ``blocklist`` lists regular expressions
    (or names); it is expanded against the table's columns and passed to pycytominer's
    ``blocklist`` operation (default when absent: pycytominer's packaged list). ``samples`` is
    pycytominer's (``"all"`` or a query). Other keyword arguments (``corr_threshold``,
    ``na_cutoff``, ``outlier_cutoff`` …) go to ``pycytominer.feature_select``.
    """
    ops = list(operations)
    unknown = [o for o in ops if o not in FEATURE_SELECT_OPERATIONS]
    if unknown:
        raise ConfigError(f"unknown feature selection operations {unknown}",
                          hint=f"use some of {FEATURE_SELECT_OPERATIONS}")
    feats = check_features(profiles, what="profile table")
    if not ops:
        return profiles
    if "variance_threshold" in ops:
        _check_variance(profiles, feats)
    kw = dict(kwargs)
    if "blocklist" in ops and blocklist is not None:
        kw["blocklist"] = expand_blocklist(feats, blocklist)
    out = pycytominer.feature_select(profiles, features=feats, operation=ops, samples=samples,
                                     output_type=None, **kw)
    if not feature_columns(out):
        raise InputError(f"feature selection {ops} removed every feature",
                         hint="loosen the thresholds (e.g. corr_threshold, na_cutoff)")
    return out


def _check_variance(profiles: pd.DataFrame, feats: Sequence[str]) -> None:
    """A clear error instead of scikit-learn's when no feature varies (e.g. a single-well plate)."""
    x = profiles[list(feats)].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(all="ignore"):
        varies = (np.nanmax(x, axis=0) > np.nanmin(x, axis=0)) if len(x) else np.zeros(len(feats), bool)
    if len(x) >= 2 and np.any(varies):
        return
    plates = sorted(map(str, profiles[PLATE].unique())) if PLATE in profiles else []
    where = f"plate(s) {', '.join(plates[:5])}" if plates else "the table"
    raise InputError(f"variance feature selection needs at least two wells that differ, but {where} "
                     f"gave {len(x)} well(s) and no feature varies across them",
                     hint="profile more wells (or several plates together), or drop 'variance_threshold' "
                          "from the feature selection (profiles: feature_select: [drop_na_columns])")


def select_reproducible(profiles: pd.DataFrame, *, replicate_columns: Sequence[str] = (COMPOUND, CONCENTRATION),
                        min_eta2: float = 0.6, exclude: str | None = CONTROLS) -> pd.DataFrame:
    """Keep features whose variance across the non-control wells is mostly *between* treatments.

    For each feature, eta² = 1 − within-treatment sum of squares / total sum of squares over the
    wells not matching ``exclude`` (a ``samples`` value, default the negative controls; ``None``:
    exclude none; treatment = ``replicate_columns``, e.g. compound + concentration; no MoA or other
    annotation is used). Features with eta² < ``min_eta2`` — those that replicate wells of the same
    treatment do not reproduce — are dropped. Needs finite features.
    """
    check_strata(profiles, replicate_columns)
    feats = check_features(profiles, what="profile table", allow_nan=False)
    if not 0.0 <= min_eta2 < 1.0:
        raise ConfigError(f"min_eta2 must be in [0, 1), got {min_eta2!r}")
    ref = profiles[~reference_mask(profiles, exclude)] if exclude else profiles
    x = ref[feats].astype(np.float64)
    groups = ref[list(replicate_columns)].astype(str).agg("|".join, axis=1)
    if groups.value_counts().max() < 2:
        raise InputError("no treatment has two or more wells: feature reproducibility is undefined",
                         hint=f"check the replicate columns {list(replicate_columns)}")
    within = ((x - x.groupby(groups).transform("mean")) ** 2).sum().to_numpy()
    total = ((x - x.mean()) ** 2).sum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        eta2 = np.where(total > 0, 1.0 - within / total, 0.0)
    keep = [f for f, e in zip(feats, eta2) if e >= min_eta2]
    if not keep:
        raise InputError(f"no feature reaches eta² >= {min_eta2} across replicate wells",
                         hint="lower min_eta2")
    log.info("reproducibility filter kept %d of %d features (eta² >= %g)", len(keep), len(feats), min_eta2)
    return profiles[metadata_columns(profiles) + keep]
