"""Per-well profiles with pycytominer: annotate → aggregate → normalize → select → (transform) → consensus.

Our code adapts and orchestrates; the operations themselves are pycytominer's
(``pycytominer.aggregate``, ``normalize``, ``feature_select``, ``consensus``). What we add:

* input checks with clear messages (no control wells on a plate, NaN/inf, non-numeric features,
  wells missing from the platemap, platemap wells without cells);
* normalization *per plate* to the negative controls (pycytominer normalizes one table at a time);
* pattern blocklists (``Location_``, ``Number_Object_Number`` …) expanded to the table's columns
  and handed to pycytominer's ``blocklist`` operation;
* a dataset-level ``whiten`` step (pycytominer's spherize, ZCA-cor, fit on the controls or on all
  wells) after per-plate normalization;
* :func:`asinh_features` (soft bound), :func:`select_reproducible` (features that replicate wells
  reproduce, by treatment identity only) and :func:`factor_analysis` (scikit-learn, fit on controls);
* ``clip`` (bound normalized features) and :func:`typical_variation_normalize` (Ledoit–Wolf
  shrinkage whitening or TVN PCA whitening fit on the control wells) — regularized whitening that
  pycytominer's spherize does not offer;
* aggregation of :func:`cellfusion_core.names.profile_feature_columns` only (position and numbering
  columns stay per cell);
* named recipes (:data:`PRESETS`), so a pipeline YAML can say ``profiles: {preset: bbbc021_best}``.

Streaming aggregation of per-cell Parquet that does not fit in memory is in
:mod:`profiler.aggregate_stream`.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pycytominer

from cellfusion_core.columns import NEGATIVE_CONTROL_QUERY  # the one control definition, as a pycytominer query
from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import (
    BATCH,
    CELL_COUNT,
    COMPOUND,
    CONCENTRATION,
    NON_PHENOTYPE_PATTERN,
    OBJECT_NUMBER,
    PLATE,
    WELL,
    feature_columns,
    metadata_columns,
    profile_feature_columns,
)

log = logging.getLogger(__name__)

DEFAULT_STRATA = (PLATE, WELL)
NORMALIZE_METHODS = ("standardize", "robustize", "mad_robustize", "spherize")
FEATURE_SELECT_OPERATIONS = ("variance_threshold", "correlation_threshold", "drop_na_columns",
                             "blocklist", "drop_outliers", "noise_removal")

#: Features that describe where a cell is or how it is numbered, not what it looks like: the one
#: definition in :mod:`cellfusion_core.names` (``is_profile_feature``) as a blocklist pattern.
POSITION_BLOCKLIST = (NON_PHENOTYPE_PATTERN,)

#: Named recipes. Keys are :func:`apply_recipe` arguments.
PRESETS: dict[str, dict[str, Any]] = {
    # The default of `profiler extract`: pycytominer's usual per-plate recipe.
    "default": {"aggregate": "median", "normalize": "mad_robustize",
                "feature_select": ["variance_threshold", "drop_na_columns"]},
    # BBBC021 (per-well profiles), benchmarks/bbbc021_profiles.py and docs/profiles.md (which also says
    # how it was found). No parameter is tuned on MoA labels: each plate is centred on its DMSO median,
    # the spread (IQR) is pooled over the DMSO wells of the plate's batch (control_variation_levels: DMSO spread varies between batches,
    # not between the plates of a batch), position/numbering features are dropped, and instead of
    # picking one bound and whitening strength, bound_ensemble averages over clip {2..8, none} × TVN
    # epsilon {0.1, 1, 10}. Needs a Metadata_Batch column when the table has several plates.
    "bbbc021_best": {"aggregate": "median", "normalize": "robustize", "normalize_params": {"scale_by": BATCH},
                     "blocklist": list(POSITION_BLOCKLIST), "feature_select": ["blocklist", "drop_na_columns"],
                     "bound_ensemble": {"clip": [2, 3, 4, 5, 6, 8, None], "epsilon": [0.1, 1.0, 10.0]}},
}


# --------------------------------------------------------------------------------------------
# checks

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


def _check_strata(df: pd.DataFrame, strata: Sequence[str]) -> None:
    missing = [c for c in strata if c not in df.columns]
    if missing:
        raise InputError(f"the table lacks the grouping columns {missing}",
                         hint=f"per-cell tables need {list(DEFAULT_STRATA)}")


# --------------------------------------------------------------------------------------------
# annotate

def annotate(table: pd.DataFrame, platemap: pd.DataFrame, *, on: Sequence[str] = (WELL,),
             allow_unimaged_wells: bool = False) -> pd.DataFrame:
    """Add the platemap's ``Metadata_*`` columns to a per-cell or per-well table (by well).

    ``platemap`` is a table as returned by :func:`profiler.plate.read_platemap` (``Metadata_Well`` …).
    Wells of ``table`` missing from the platemap are an error (their treatment would be unknown);
    platemap wells without any row in ``table`` are an error unless ``allow_unimaged_wells``.
    """
    on = list(on)
    _check_strata(table, on)
    missing_pm = [c for c in on if c not in platemap.columns]
    if missing_pm:
        raise InputError(f"the platemap lacks the columns {missing_pm}")
    keys_t = table[on].drop_duplicates()
    keys_p = platemap[on].drop_duplicates()
    m = keys_t.merge(keys_p, how="outer", indicator=True)
    def _names(rows: pd.DataFrame) -> list[str]:
        return ["/".join(map(str, r)) for r in rows[on].itertuples(index=False)]

    not_in_pm = _names(m[m["_merge"] == "left_only"])
    if not_in_pm:
        raise InputError(f"{len(not_in_pm)} wells have cells but are missing from the platemap: "
                         f"{', '.join(sorted(not_in_pm)[:10])}",
                         hint="add these wells to platemap.csv (well,compound,concentration,control)")
    no_img = _names(m[m["_merge"] == "right_only"])
    if no_img:
        msg = f"{len(no_img)} platemap wells have no cells/images: {', '.join(sorted(no_img)[:10])}"
        if not allow_unimaged_wells:
            raise InputError(msg, hint="check the image folder, or allow unimaged wells "
                                       "(--allow-unimaged-wells) if they were not imaged on purpose")
        log.warning(msg)
    extra = [c for c in platemap.columns if c not in on]
    clash = [c for c in extra if c in table.columns]
    base = table.drop(columns=clash)
    out = base.merge(platemap[on + extra], on=on, how="left")
    meta = metadata_columns(out)
    return out[meta + [c for c in out.columns if c not in meta]]


# --------------------------------------------------------------------------------------------
# aggregate

def aggregate(single_cell: pd.DataFrame, *, strata: Sequence[str] = DEFAULT_STRATA,
              operation: str = "median", features: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per well: ``operation`` (median or mean) of every profile feature over the well's cells.

    ``features`` default: :func:`cellfusion_core.names.profile_feature_columns` — position and numbering
    columns (``Location_*``, ``AreaShape_Center_*``, ``Parent_*`` …) stay in the per-cell table but
    are not aggregated. Metadata columns that are constant within a well are carried over; the number
    of cells per well is ``Metadata_Object_Count`` (pycytominer's name). NaN values are skipped.
    """
    if operation not in ("median", "mean"):
        raise ConfigError(f"unknown aggregate operation {operation!r}", hint="use 'median' or 'mean'")
    _check_strata(single_cell, strata)
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


# --------------------------------------------------------------------------------------------
# normalize

def normalize(profiles: pd.DataFrame, *, method: str = "mad_robustize",
              samples: str = NEGATIVE_CONTROL_QUERY, by: str | None = PLATE,
              scale_by: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """Normalize each plate (``by``) to the wells selected by ``samples`` (a pycytominer query).

    ``samples="all"`` normalizes to the whole plate. A plate without any well matching
    ``samples`` is an error naming the plate. Extra keyword arguments go to
    ``pycytominer.normalize`` (e.g. ``spherize_epsilon``).

    ``scale_by`` (e.g. ``Metadata_Batch``, or ``"all"``) separates the two halves of the
    normalization: each plate is still *centred* on its own controls, but the *spread* that divides
    the features is that of the plate-centred controls pooled over every plate of the ``scale_by``
    group — see :func:`_centre_then_scale`. Default ``None``: pycytominer's per-plate normalization.
    With ``scale_by`` the only extra keyword argument is ``mad_robustize_epsilon``.
    """
    if method not in NORMALIZE_METHODS:
        raise ConfigError(f"unknown normalization {method!r}", hint=f"use one of {NORMALIZE_METHODS}")
    feats = check_features(profiles, what="profile table")
    if by is not None and by not in profiles.columns:
        raise InputError(f"cannot normalize per {by!r}: the table has no such column",
                         hint="normalize the whole table with by=None")
    groups = profiles.groupby(by, sort=False) if by else [(None, profiles)]
    for key, plate in groups:
        if samples != "all":
            if len(_query(plate, samples)) == 0:
                where = f"plate {key!r}" if by else "the table"
                raise InputError(f"{where} has no control wells matching {samples!r}",
                                 hint="mark negative-control wells (control = negative in the platemap), "
                                      "or normalize to the whole plate with samples='all' (--samples all)")
    if scale_by is not None:
        out = _centre_then_scale(profiles, feats, method=method, samples=samples, by=by, scale_by=scale_by, **kwargs)
    else:
        out = pd.concat([pycytominer.normalize(plate, features=feats, meta_features=metadata_columns(plate),
                                               samples=samples, method=method, output_type=None, **kwargs)
                         for _, plate in groups], ignore_index=True)
    return out[metadata_columns(out) + feature_columns(out)]


def _centre_then_scale(profiles: pd.DataFrame, feats: Sequence[str], *, method: str, samples: str,
                       by: str | None, scale_by: str, mad_robustize_epsilon: float = 1e-18) -> pd.DataFrame:
    """Centre each ``by`` group on its controls; divide by the pooled spread of each ``scale_by`` group.

    Same statistics as pycytominer's methods: ``standardize`` mean / standard deviation (ddof 0),
    ``robustize`` median / interquartile range, ``mad_robustize`` median / 1.4826 × MAD (+ epsilon);
    a zero spread divides by 1, as scikit-learn's scalers do. The spread is computed from the
    plate-centred control wells of all plates in the group, so a group of one plate gives exactly
    pycytominer's per-plate result. Why: with few controls per plate (6 DMSO wells per BBBC021 plate)
    a per-plate spread is mostly sampling noise, while plate-to-plate shifts in location are real;
    :func:`control_variation_levels` measures both for a table.
    """
    if method == "spherize":
        raise ConfigError("scale_by does not apply to spherize", hint="use standardize, robustize or mad_robustize")
    if by is None:
        raise ConfigError("scale_by needs per-plate normalization (by: a plate column)")
    if scale_by != "all" and scale_by not in profiles.columns:
        if profiles[by].nunique() > 1:
            raise InputError(f"cannot pool the control spread per {scale_by!r}: the table has no such column "
                             f"({profiles[by].nunique()} plates)",
                             hint=f"add a batch column to the platemap (it becomes {scale_by}), or set "
                                  "scale_by: null for a per-plate spread")
        scale_by = "all"   # one plate is one group whatever its batch: pooling over it is the plate
    profiles = profiles.reset_index(drop=True)   # positions = labels, so the control mask is exact
    x = profiles[list(feats)].to_numpy(dtype=np.float64, copy=True)
    ctrl = np.ones(len(profiles), bool) if samples == "all" else profiles.index.isin(_query(profiles, samples).index)
    centre = np.nanmean if method == "standardize" else np.nanmedian
    for idx in profiles.groupby(by, sort=False).indices.values():
        sel = idx[ctrl[idx]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN feature stays NaN
            x[idx] -= centre(x[sel], axis=0)
    pools = [np.arange(len(profiles))] if scale_by == "all" else profiles.groupby(scale_by, sort=False).indices.values()
    for idx in pools:
        c = x[idx[ctrl[idx]]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if method == "standardize":
                spread = np.nanstd(c, axis=0)
            elif method == "robustize":
                q1, q3 = np.nanpercentile(c, [25, 75], axis=0)
                spread = q3 - q1
            else:
                spread = 1.4826 * np.nanmedian(np.abs(c - np.nanmedian(c, axis=0)), axis=0) + mad_robustize_epsilon
        if method != "mad_robustize":
            spread = np.where(spread == 0, 1.0, spread)
        x[idx] /= spread
    out = profiles.copy()
    out[list(feats)] = x
    return out


def control_variation_levels(profiles: pd.DataFrame, *, samples: str = NEGATIVE_CONTROL_QUERY,
                             plate: str = PLATE, batch: str = BATCH, n_permutations: int = 50,
                             seed: int = 0) -> dict[str, dict[str, float]]:
    """At which level do the control wells' location and spread really vary? (label-free)

    Three per-feature variance ratios, observed / mean over ``n_permutations`` label permutations
    (1 ≈ what sampling noise alone gives; well above 1 = a real effect at that level):

    * ``location_plates_within_batch`` — variance of the plates' control medians (after removing
      each batch's median), against plate labels permuted among the controls of the same batch;
    * ``spread_plates_within_batch`` — variance of log IQR of the plate-centred controls of each
      plate around its batch's mean, same permutation;
    * ``spread_between_batches`` — variance of log IQR of the plate-centred controls of each batch,
      against batch labels permuted over all controls.

    Each entry: ``median_ratio`` over features and ``fraction_above_2``. Uses the control wells and
    the plate/batch columns only. Choose the normalization levels from it: centre per plate when
    plate locations vary, pool the spread per batch (``scale_by``) when spreads vary between
    batches but not between the plates of a batch.
    """
    for col in (plate, batch):
        if col not in profiles.columns:
            raise InputError(f"control variation levels need a {col!r} column", hint="annotate plates and batches")
    ctrl = _query(profiles, samples) if samples != "all" else profiles
    feats = check_features(ctrl, what="control wells", allow_nan=False)
    if ctrl[batch].nunique() < 2 or (ctrl.groupby(batch)[plate].nunique() < 2).all():
        raise InputError("control variation levels need at least two batches and a batch with two plates",
                         hint=f"the table has {ctrl[batch].nunique()} batch(es)")
    x = ctrl[feats].to_numpy(dtype=np.float64)
    plates = ctrl[plate].astype(str).to_numpy()
    batches = ctrl[batch].astype(str).to_numpy()
    rng = np.random.default_rng(seed)

    def centred(v: np.ndarray, labels: np.ndarray) -> np.ndarray:
        v = v.copy()
        for lab in np.unique(labels):
            v[labels == lab] -= np.median(v[labels == lab], axis=0)
        return v

    def log_iqr(v: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labs = np.unique(labels)
        q = np.array([np.subtract(*np.percentile(v[labels == lab], [75, 25], axis=0)) for lab in labs])
        return np.log(np.maximum(q, 1e-12)), labs

    def within_batch_var(vals: np.ndarray, labs: np.ndarray, pl: np.ndarray) -> np.ndarray:
        owner = np.array([batches[np.flatnonzero(pl == lab)[0]] for lab in labs])
        return centred(vals, owner).var(axis=0)

    def location(pl: np.ndarray) -> np.ndarray:
        xb = centred(x, batches)
        labs = np.unique(pl)
        return within_batch_var(np.array([np.median(xb[pl == lab], axis=0) for lab in labs]), labs, pl)

    def spread_plates(pl: np.ndarray) -> np.ndarray:
        return within_batch_var(*log_iqr(centred(x, pl), pl), pl)

    xp = centred(x, plates)

    def spread_batches(bt: np.ndarray) -> np.ndarray:
        return log_iqr(xp, bt)[0].var(axis=0)

    def permute_within_batch() -> np.ndarray:
        pl = plates.copy()
        for b in np.unique(batches):
            idx = np.flatnonzero(batches == b)
            pl[idx] = pl[rng.permutation(idx)]
        return pl

    out = {}
    for name, stat, labels, shuffle in (
            ("location_plates_within_batch", location, plates, permute_within_batch),
            ("spread_plates_within_batch", spread_plates, plates, permute_within_batch),
            ("spread_between_batches", spread_batches, batches, lambda: rng.permutation(batches))):
        obs = stat(labels)
        null = np.mean([stat(shuffle()) for _ in range(n_permutations)], axis=0)
        ok = null > 0
        ratio = obs[ok] / null[ok]
        out[name] = {"median_ratio": float(np.median(ratio)), "fraction_above_2": float(np.mean(ratio > 2))}
    return out


def whiten(profiles: pd.DataFrame, *, samples: str = "all", method: str = "ZCA-cor",
           epsilon: float = 1e-6, by: str | None = None) -> pd.DataFrame:
    """Spherize (pycytominer) the whole table or each ``by`` group, fit on the ``samples`` wells.

    Used after per-plate normalization; ``epsilon`` is added to the eigenvalues (a large value
    shrinks the whitening towards plain scaling, which is what small data sets need).
    """
    feats = check_features(profiles, what="profile table", allow_nan=False)
    return normalize(profiles[metadata_columns(profiles) + feats], method="spherize", samples=samples,
                     by=by, spherize_method=method, spherize_epsilon=epsilon)


def _query(table: pd.DataFrame, query: str) -> pd.DataFrame:
    """``table.query(query)``, a malformed control query reported as a :class:`ConfigError`.

    The query is evaluated on the columns whose names occur in it (pandas resolves every column of
    the frame it is given, which costs more than the query itself on a table of 2,000 features)."""
    try:
        names = [c for c in table.columns if isinstance(c, str) and c in query]
        if not names or not table.columns.is_unique:
            return table.query(query)
        keep = table[names].eval(query)
        if isinstance(keep, pd.Series) and keep.dtype == bool:
            return table[keep.to_numpy()]
        return table.query(query)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad query
        raise ConfigError(f"cannot evaluate the control query {query!r} ({exc})") from exc


TVN_METHODS = ("ledoit_wolf", "pca")


def typical_variation_normalize(profiles: pd.DataFrame, *, samples: str = NEGATIVE_CONTROL_QUERY,
                                method: str = "ledoit_wolf", epsilon: float = 1.0, by: str | None = None,
                                clip: float | None = None) -> pd.DataFrame:
    """Typical variation normalization: whiten with the covariance of the control wells.

    What pycytominer's spherize does not offer (its only regularization is an additive epsilon,
    which with fewer control wells than features either amplifies noise or barely whitens):

    * ``method="ledoit_wolf"`` — ZCA whitening with the Ledoit–Wolf shrunk covariance of the
      ``samples`` wells (shrinkage chosen analytically from the data, no parameter); centred on the
      control mean, feature names kept. ``epsilon`` is not used.
    * ``method="pca"`` — TVN (Ando et al. 2017): PCA of the control wells, components with zero
      control variance (rank deficiency: at most one per control well) dropped, each component
      divided by ``sqrt(eigenvalue + epsilon * mean eigenvalue)``; columns ``TVN_0001`` …

    Fit on the whole table or per ``by`` group (e.g. ``Metadata_Batch``). ``clip`` bounds the result
    to ±clip (a few extreme wells otherwise dominate cosine similarities). Needs finite features.
    """
    if method not in TVN_METHODS:
        raise ConfigError(f"unknown typical-variation method {method!r}", hint=f"use one of {TVN_METHODS}")
    from sklearn.covariance import LedoitWolf

    feats = check_features(profiles, what="profile table", allow_nan=False)
    meta = metadata_columns(profiles)
    if by is not None and by not in profiles.columns:
        raise InputError(f"cannot fit typical variation per {by!r}: the table has no such column")
    parts = []
    for key, grp in (profiles.groupby(by, sort=False) if by else [(None, profiles)]):
        where = f"group {key!r}" if by else "the table"
        ref = _query(grp, samples) if samples != "all" else grp
        if len(ref) < 3:
            raise InputError(f"{where} has {len(ref)} wells matching {samples!r}; typical variation needs >= 3",
                             hint="fit on the whole table (by: null) or on all wells (samples: all)")
        x = grp[feats].to_numpy(dtype=np.float64)
        r = ref[feats].to_numpy(dtype=np.float64)
        if method == "ledoit_wolf":
            est = LedoitWolf().fit(r)
            vals, vecs = np.linalg.eigh(est.covariance_)
            y = (x - est.location_) @ (vecs / np.sqrt(np.maximum(vals, 1e-12))) @ vecs.T
            cols = feats
        else:
            mu = r.mean(axis=0)
            _, sv, vt = np.linalg.svd(r - mu, full_matrices=False)
            ev = sv ** 2 / (len(r) - 1)
            keep = ev > 1e-6 * ev[0]
            ev, vt = ev[keep], vt[keep]
            y = (x - mu) @ (vt.T / np.sqrt(ev + epsilon * ev.mean()))
            cols = [f"TVN_{i + 1:04d}" for i in range(y.shape[1])]
        if clip is not None:
            y = np.clip(y, -clip, clip)
        parts.append(pd.concat([grp[meta].reset_index(drop=True), pd.DataFrame(y, columns=cols)], axis=1))
    if len({tuple(p.columns) for p in parts}) > 1:
        raise InputError(f"the groups of {by!r} kept different numbers of components",
                         hint="use method 'ledoit_wolf' per group, or fit 'pca' on the whole table")
    return pd.concat(parts, ignore_index=True)


def bound_ensemble(profiles: pd.DataFrame, *, clip: Sequence[float | None] = (2, 3, 4, 5, 6, 8, None),
                   epsilon: Sequence[float] = (0.1, 1.0, 10.0),
                   samples: str = NEGATIVE_CONTROL_QUERY) -> pd.DataFrame:
    """Bound and whiten over a whole grid of settings instead of choosing one.

    For every ``clip`` bound (``None``: unbounded) and every TVN ``epsilon``, the normalized
    profiles are clipped (:func:`clip_features`) and whitened on the control wells
    (:func:`typical_variation_normalize`, ``method="pca"``); each resulting block is scaled to unit
    length per well and the blocks are concatenated (columns ``B01_TVN_0001`` …, block order =
    ``clip`` outer, ``epsilon`` inner). The cosine similarity of two wells on the concatenation is
    then the mean of their cosine similarities over the settings, so no bound or whitening strength
    has to be picked (on BBBC021 no label-free score picked them well; docs/profiles.md).
    """
    clips, epss = list(clip), list(epsilon)
    if not clips or not epss:
        raise ConfigError("bound_ensemble needs at least one clip bound and one epsilon")
    for c in clips:
        if c is not None and (not np.isfinite(c) or c <= 0):
            raise ConfigError(f"bound_ensemble clip bounds must be positive numbers or null, got {c!r}")
    meta = profiles[metadata_columns(profiles)].reset_index(drop=True)
    blocks = []
    for c in clips:
        bounded = clip_features(profiles, float(c)) if c is not None else profiles
        for e in epss:
            t = typical_variation_normalize(bounded, samples=samples, method="pca", epsilon=float(e))
            cols = feature_columns(t)
            x = t[cols].to_numpy(dtype=np.float64, copy=True)
            norm = np.linalg.norm(x, axis=1, keepdims=True)
            x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
            k = len(blocks) + 1
            log.info("bound_ensemble block B%02d: clip %s, TVN epsilon %g", k, c, e)
            blocks.append(pd.DataFrame(x, columns=[f"B{k:02d}_{col}" for col in cols]))
    return pd.concat([meta, *blocks], axis=1)


def clip_features(profiles: pd.DataFrame, bound: float) -> pd.DataFrame:
    """Bound every feature to ±``bound`` (after normalization to controls: robust z-scores)."""
    feats = check_features(profiles, what="profile table")
    # in numpy: a frame built column by column has one block per column, and DataFrame.clip /
    # column-list assignment then work block by block (seconds for 2,000 features)
    x = np.clip(profiles[feats].to_numpy(dtype=np.float64, na_value=np.nan), -bound, bound)
    clipped = pd.DataFrame(x, index=profiles.index, columns=feats)
    return pd.concat([profiles.drop(columns=feats), clipped], axis=1)[profiles.columns]


def asinh_features(profiles: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """Soft bound: ``scale * arcsinh(x / scale)`` on every feature (after normalization to controls).

    Linear for ``|x| << scale``, logarithmic beyond, sign kept: large robust z-scores are compressed
    instead of cut off at a hard bound (:func:`clip_features`), so strong phenotypes keep their order.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise ConfigError(f"asinh scale must be a positive number, got {scale!r}")
    feats = check_features(profiles, what="profile table")
    out = profiles.copy()
    out[feats] = scale * np.arcsinh(out[feats].to_numpy(dtype=np.float64) / scale)
    return out


def select_reproducible(profiles: pd.DataFrame, *, replicate_columns: Sequence[str] = (COMPOUND, CONCENTRATION),
                        min_eta2: float = 0.6, exclude: str | None = NEGATIVE_CONTROL_QUERY) -> pd.DataFrame:
    """Keep features whose variance across the non-control wells is mostly *between* treatments.

    For each feature, eta² = 1 − within-treatment sum of squares / total sum of squares over the
    wells not matching ``exclude`` (treatment = ``replicate_columns``, e.g. compound + concentration;
    no MoA or other annotation is used). Features with eta² < ``min_eta2`` — those that replicate
    wells of the same treatment do not reproduce — are dropped. Needs finite features.
    """
    _check_strata(profiles, replicate_columns)
    feats = check_features(profiles, what="profile table", allow_nan=False)
    if not 0.0 <= min_eta2 < 1.0:
        raise ConfigError(f"min_eta2 must be in [0, 1), got {min_eta2!r}")
    ref = profiles.drop(index=_query(profiles, exclude).index) if exclude else profiles
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


def factor_analysis(profiles: pd.DataFrame, *, n_factors: int = 50, samples: str = NEGATIVE_CONTROL_QUERY,
                    seed: int = 0) -> pd.DataFrame:
    """Factor scores (scikit-learn ``FactorAnalysis``, as Ljosa et al. 2013) fit on the ``samples`` wells.

    Columns ``FA_0001`` …; the model is fit on the wells matching ``samples`` (``"all"``: every well)
    and every well is projected. Needs finite features.
    """
    from sklearn.decomposition import FactorAnalysis

    feats = check_features(profiles, what="profile table", allow_nan=False)
    ref = _query(profiles, samples) if samples != "all" else profiles
    if not 1 <= n_factors <= min(len(ref), len(feats)):
        raise ConfigError(f"n_factors must be between 1 and min(wells, features) = {min(len(ref), len(feats))}, "
                          f"got {n_factors}", hint="fewer factors, or fit on all wells (samples: all)")
    fa = FactorAnalysis(n_components=n_factors, random_state=seed).fit(ref[feats].to_numpy(dtype=np.float64))
    z = fa.transform(profiles[feats].to_numpy(dtype=np.float64))
    cols = [f"FA_{i + 1:04d}" for i in range(z.shape[1])]
    return pd.concat([profiles[metadata_columns(profiles)].reset_index(drop=True),
                      pd.DataFrame(z, columns=cols)], axis=1)


# --------------------------------------------------------------------------------------------
# feature selection and consensus

def expand_blocklist(columns: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Feature columns matching any of the regular expressions (or exact names) in ``patterns``."""
    regs = [re.compile(p) for p in patterns]
    return [c for c in feature_columns(columns) if any(r.search(c) for r in regs)]


def feature_select(profiles: pd.DataFrame, *, operations: Sequence[str] = ("variance_threshold", "drop_na_columns"),
                   samples: str = "all", blocklist: Sequence[str] | None = None, **kwargs: Any) -> pd.DataFrame:
    """pycytominer feature selection over the feature columns.

    ``operations`` ⊆ :data:`FEATURE_SELECT_OPERATIONS`. ``blocklist`` lists regular expressions
    (or names); it is expanded against the table's columns and passed to pycytominer's
    ``blocklist`` operation (default when absent: pycytominer's packaged list).
    Other keyword arguments (``corr_threshold``, ``na_cutoff``, ``outlier_cutoff`` …) go to
    ``pycytominer.feature_select``.
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


def consensus(profiles: pd.DataFrame, *, replicate_columns: Sequence[str], operation: str = "median",
              **kwargs: Any) -> pd.DataFrame:
    """One profile per treatment (pycytominer.consensus: median, mean or modz of the replicates)."""
    _check_strata(profiles, replicate_columns)
    feats = check_features(profiles, what="profile table")
    out = pycytominer.consensus(profiles, replicate_columns=list(replicate_columns), operation=operation,
                                features=feats, output_type=None, **kwargs)
    return out


# --------------------------------------------------------------------------------------------
# recipes

def resolve_recipe(recipe: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A recipe mapping from a preset name, a mapping (``preset:`` key allowed) or None (default)."""
    if recipe is None:
        return copy.deepcopy(PRESETS["default"])
    if isinstance(recipe, str):
        if recipe not in PRESETS:
            raise ConfigError(f"unknown profile preset {recipe!r}", hint=f"use one of {sorted(PRESETS)}")
        return copy.deepcopy(PRESETS[recipe])
    rec = dict(recipe)
    if "preset" in rec:
        base = resolve_recipe(str(rec.pop("preset")))
        base.update(rec)
        rec = base
    allowed = {"aggregate", "normalize", "samples", "feature_select", "blocklist", "feature_select_params",
               "whiten", "normalize_params", "clip", "asinh", "reproducible", "typical_variation",
               "factor_analysis", "bound_ensemble"}
    unknown = set(rec) - allowed
    if unknown:
        raise ConfigError(f"unknown keys in the profiles recipe: {sorted(unknown)}", hint=f"allowed: {sorted(allowed)}")
    return rec


def apply_recipe(profiles: pd.DataFrame, recipe: str | Mapping[str, Any] | None = None, *,
                 samples: str | None = None) -> pd.DataFrame:
    """Normalize → feature-select → whiten per-well ``profiles`` as a recipe says.

    Recipe keys: ``normalize`` (method or None), ``samples`` (control query, ``"all"``),
    ``normalize_params``, ``feature_select`` (operations), ``blocklist`` (patterns),
    ``feature_select_params``, ``clip`` (bound after feature selection), ``asinh`` (scale of the
    soft bound :func:`asinh_features`), ``reproducible`` (None or ``{replicate_columns, min_eta2}``:
    :func:`select_reproducible`, controls excluded), ``whiten`` (None or
    ``{samples, method, epsilon, by}``: pycytominer spherize), ``typical_variation`` (None or
    ``{samples, method, epsilon, by, clip}``: :func:`typical_variation_normalize`),
    ``factor_analysis`` (None or ``{n_factors, samples, seed}``: :func:`factor_analysis`, last),
    ``bound_ensemble`` (None or ``{clip, epsilon, samples}``: :func:`bound_ensemble`, instead of
    ``clip``/``asinh`` and the whitening steps). ``samples: controls`` in these steps means the
    recipe's control query.
    """
    rec = resolve_recipe(recipe)
    if rec.get("bound_ensemble"):
        clash = [k for k in ("clip", "asinh", "whiten", "typical_variation", "factor_analysis") if rec.get(k)]
        if clash:
            raise ConfigError(f"bound_ensemble replaces {clash} (it bounds and whitens over a grid itself)",
                              hint=f"remove {clash} from the recipe, or drop bound_ensemble")
    samples = samples if samples is not None else rec.get("samples", NEGATIVE_CONTROL_QUERY)
    prof = profiles
    empty = [c for c in feature_columns(prof) if prof[c].isna().all()]
    if empty:
        # undefined for every well of this table (e.g. a texture direction no object has): no information
        log.info("%d feature(s) are NaN in every well and are left out, e.g. %s", len(empty), ", ".join(empty[:3]))
        prof = prof.drop(columns=empty)
    if rec.get("normalize"):
        prof = normalize(prof, method=rec["normalize"], samples=samples, **rec.get("normalize_params", {}))
    if rec.get("feature_select"):
        prof = feature_select(prof, operations=rec["feature_select"], blocklist=rec.get("blocklist"),
                              **rec.get("feature_select_params", {}))
    if rec.get("clip") is not None:
        prof = clip_features(prof, float(rec["clip"]))
    if rec.get("asinh") is not None:
        prof = asinh_features(prof, float(rec["asinh"]))
    if rec.get("reproducible"):
        prof = select_reproducible(prof, **{"exclude": samples, **dict(rec["reproducible"])})
    # whiten fits on all wells unless told "controls"; the others fit on the controls by default
    for key, step, default in (("whiten", whiten, None), ("typical_variation", typical_variation_normalize, "controls"),
                               ("factor_analysis", factor_analysis, "controls"),
                               ("bound_ensemble", bound_ensemble, "controls")):
        params = rec.get(key)
        if params:
            params = dict(params)
            if params.get("samples", default) == "controls":
                params["samples"] = samples
            prof = step(prof, **params)
    return prof


def build_profiles(single_cell: pd.DataFrame, *, aggregate_operation: str = "median",
                   normalize_method: str | None = "mad_robustize", samples: str = NEGATIVE_CONTROL_QUERY,
                   feature_select_operations: Sequence[str] = ("variance_threshold", "drop_na_columns"),
                   recipe: str | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """aggregate → normalize → feature_select (→ whiten): the profile recipe of ``profiler extract``.

    A per-cell table with ``Metadata_Outlier`` gives the per-well ``Metadata_Outlier_Fraction`` and
    ``Metadata_Outlier_Well_Score`` too (:func:`profiler.outliers.add_well_columns`), as extract does.

    With ``recipe`` (a preset name or mapping) the recipe's steps replace the explicit arguments.
    """
    from profiler import outliers as ol

    def _agg(operation: str) -> pd.DataFrame:  # + the per-well outlier columns when cells are flagged
        prof = aggregate(single_cell, operation=operation)
        return ol.add_well_columns(prof, ol.cell_fractions(single_cell)) if ol.FLAG in single_cell.columns else prof

    if recipe is not None:
        rec = resolve_recipe(recipe)
        prof = _agg(rec.get("aggregate", aggregate_operation))
        return apply_recipe(prof, rec, samples=rec.get("samples", samples))
    prof = _agg(aggregate_operation)
    rec = {"normalize": normalize_method, "feature_select": list(feature_select_operations)}
    return apply_recipe(prof, rec, samples=samples)


# --------------------------------------------------------------------------------------------
# the command

def aggregate_command(single_cell_path: str | Path, out_dir: str | Path, *, platemap: str | Path | None = None,
                      recipe: str | Mapping[str, Any] | None = None, operation: str | None = None,
                      samples: str | None = None, allow_unimaged_wells: bool = False,
                      memory_mb: float = 1500) -> Path:
    """``profiler aggregate``: per-cell Parquet (file or folder) → ``out_dir/profiles.parquet`` + manifest.

    Aggregation streams the Parquet with DuckDB (memory bounded by ``memory_mb`` whatever the number
    of cells); then platemap annotation and the recipe's normalize → feature_select → whiten steps.
    """
    from cellfusion_core import io
    from profiler.aggregate_stream import aggregate_parquet
    from profiler.plate import read_platemap

    rec = resolve_recipe(recipe)
    op = operation or rec.get("aggregate", "median")
    prof = aggregate_parquet(single_cell_path, operation=op, memory_mb=memory_mb)
    inputs: dict[str, Path] = {"single_cell": Path(single_cell_path)}
    if platemap is not None:
        prof = annotate(prof, read_platemap(platemap), allow_unimaged_wells=allow_unimaged_wells)
        inputs["platemap"] = Path(platemap)
    prof = apply_recipe(prof, rec, samples=samples)
    out_dir = Path(out_dir)
    io.write_parquet(prof, out_dir / "profiles.parquet")
    io.write_manifest(out_dir, command="profiler aggregate", inputs=inputs,
                      parameters={"recipe": rec, "aggregate": op, "samples": samples,
                                  "allow_unimaged_wells": allow_unimaged_wells},
                      outputs={"profiles.parquet": {"rows": len(prof), "columns": prof.shape[1]}})
    return out_dir
