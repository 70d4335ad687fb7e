"""Per-well profiles with pycytominer: annotate → aggregate → normalize → select → (transform) → consensus.

One module per profiling step, each a table-in/table-out function in pycytominer's shape
(``profiles``, ``features``, ``samples``); our code adapts and orchestrates, the operations themselves
are pycytominer's or scikit-learn's:

* :mod:`~profiler.profiles.annotate` — platemap metadata onto cells or wells (``pycytominer.annotate``);
* :mod:`~profiler.profiles.aggregate` — one row per well (``pycytominer.aggregate``; streamed from
  Parquet by :mod:`profiler.profiles.aggregate_stream`) and per treatment (``pycytominer.consensus``);
* :mod:`~profiler.profiles.normalize` — per plate to the controls (``pycytominer.normalize``), the
  control spread pooled per batch (``scale_by``), ``whiten`` (pycytominer's spherize);
* :mod:`~profiler.profiles.select` — ``pycytominer.feature_select`` with pattern blocklists, and the
  replicate-reproducibility filter;
* :mod:`~profiler.profiles.transforms` — clip, asinh, typical-variation normalization, factor
  analysis and the bound ensemble as scikit-learn transformers, fit on the reference rows (the
  control wells) and applied to all (:func:`~profiler.profiles.transforms.fit_transform_table`);
* :mod:`~profiler.profiles.recipes` — named recipes (:data:`PRESETS`) and :func:`apply_recipe`;
* :mod:`~profiler.profiles.diagnostics` — at which level the control wells vary;
* :mod:`~profiler.profiles.reference` — which rows a step fits on (``samples``): by default the
  negative controls of the project's one rule, :func:`cellfusion_core.columns.control_mask`;
* :mod:`~profiler.profiles.command` — ``profiler aggregate``.

What we add to pycytominer: input checks with clear messages (no control wells on a plate, NaN/inf,
non-numeric features, wells missing from the platemap, platemap wells without cells);
normalization *per plate*; regularized whitening; named recipes, so a pipeline YAML can say
``profiles: {preset: bbbc021_best}``.
"""

from cellfusion_core.columns import NEGATIVE_CONTROL_QUERY

from .aggregate import DEFAULT_STRATA, aggregate, aggregate_parquet, consensus
from .annotate import annotate
from .checks import check_features, check_strata
from .command import aggregate_command
from .diagnostics import control_variation_levels
from .normalize import NORMALIZE_METHODS, centre_then_scale, normalize, whiten
from .recipes import PRESETS, apply_recipe, build_profiles, resolve_recipe
from .reference import CONTROLS, reference_mask
from .select import (
    FEATURE_SELECT_OPERATIONS,
    POSITION_BLOCKLIST,
    expand_blocklist,
    feature_select,
    select_reproducible,
)
from .transforms import (
    TVN_METHODS,
    Asinh,
    BoundEnsemble,
    Clip,
    FactorScores,
    TypicalVariation,
    asinh_features,
    bound_ensemble,
    clip_features,
    factor_analysis,
    fit_transform_table,
    typical_variation_normalize,
)

__all__ = [
    "CONTROLS", "NEGATIVE_CONTROL_QUERY", "DEFAULT_STRATA", "NORMALIZE_METHODS", "FEATURE_SELECT_OPERATIONS",
    "POSITION_BLOCKLIST", "PRESETS", "TVN_METHODS",
    "check_features", "check_strata", "reference_mask",
    "annotate", "aggregate", "aggregate_parquet", "consensus",
    "normalize", "centre_then_scale", "whiten",
    "expand_blocklist", "feature_select", "select_reproducible",
    "Clip", "Asinh", "TypicalVariation", "FactorScores", "BoundEnsemble", "fit_transform_table",
    "clip_features", "asinh_features", "typical_variation_normalize", "factor_analysis", "bound_ensemble",
    "resolve_recipe", "apply_recipe", "build_profiles", "control_variation_levels", "aggregate_command",
]
