"""Named profile recipes: annotate → aggregate → normalize → select → transform, as one mapping.

A recipe (:data:`PRESETS`, or a pipeline YAML's ``profiles:`` section) names the steps of
:mod:`profiler.profiles.normalize`, :mod:`~profiler.profiles.select` and
:mod:`~profiler.profiles.transforms` and their parameters; :func:`apply_recipe` runs them in a fixed
order on per-well profiles and :func:`build_profiles` aggregates per-cell rows first (the profile
stage of ``profiler extract``). pycytominer's counterpart is the sequence of its operations a
profiling notebook calls.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cellfusion_core.errors import ConfigError
from cellfusion_core.names import BATCH, feature_columns

from .aggregate import aggregate
from .normalize import normalize, whiten
from .reference import CONTROLS
from .select import POSITION_BLOCKLIST, feature_select, select_reproducible
from .transforms import asinh_features, bound_ensemble, clip_features, factor_analysis, typical_variation_normalize

log = logging.getLogger(__name__)

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

    Recipe keys: ``normalize`` (method or None), ``samples`` (the wells the steps fit on:
    ``"controls"`` — the default, :func:`cellfusion_core.columns.control_mask` —, ``"all"`` or a
    pandas query; :mod:`profiler.profiles.reference`),
    ``normalize_params``, ``feature_select`` (operations), ``blocklist`` (patterns),
    ``feature_select_params``, ``clip`` (bound after feature selection), ``asinh`` (scale of the
    soft bound :func:`asinh_features`), ``reproducible`` (None or ``{replicate_columns, min_eta2}``:
    :func:`select_reproducible`, controls excluded), ``whiten`` (None or
    ``{samples, method, epsilon, by}``: pycytominer spherize), ``typical_variation`` (None or
    ``{samples, method, epsilon, by, clip}``: :func:`typical_variation_normalize`),
    ``factor_analysis`` (None or ``{n_factors, samples, seed}``: :func:`factor_analysis`, last),
    ``bound_ensemble`` (None or ``{clip, epsilon, samples}``: :func:`bound_ensemble`, instead of
    ``clip``/``asinh`` and the whitening steps). ``samples: controls`` in these steps means the
    recipe's ``samples``.
    """
    rec = resolve_recipe(recipe)
    if rec.get("bound_ensemble"):
        clash = [k for k in ("clip", "asinh", "whiten", "typical_variation", "factor_analysis") if rec.get(k)]
        if clash:
            raise ConfigError(f"bound_ensemble replaces {clash} (it bounds and whitens over a grid itself)",
                              hint=f"remove {clash} from the recipe, or drop bound_ensemble")
    samples = samples if samples is not None else rec.get("samples", CONTROLS)
    prof = profiles
    feats = feature_columns(prof)
    empty = [c for c, e in zip(feats, prof[feats].isna().all().to_numpy()) if e] if prof.columns.is_unique \
        else [c for c in feats if prof[c].isna().all()]
    if empty:
        # undefined for every well of this table (e.g. a texture direction no object has): no information
        log.info("%d feature(s) are NaN in every well and are left out, e.g. %s", len(empty), ", ".join(empty[:3]))
        # (copied: pandas' drop keeps the remaining columns as views, one block per column, and every
        # later step's column selection and dtype lookup then walks 1,500 blocks)
        prof = prof.drop(columns=empty).copy()
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
                   normalize_method: str | None = "mad_robustize", samples: str = CONTROLS,
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
