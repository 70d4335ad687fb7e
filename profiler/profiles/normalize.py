"""Normalize each plate to its reference wells (pycytominer's ``normalize``), with a pooled spread (``scale_by``).

* :func:`normalize` — ``pycytominer.normalize`` run per plate (pycytominer normalizes one table at
  a time): standardize, robustize, mad_robustize or spherize, fit on the plate's ``samples`` wells
  (default: the negative controls, :mod:`profiler.profiles.reference`);
* ``scale_by`` — centre each plate on its controls, divide by the spread of the plate-centred
  controls pooled over a batch (:func:`centre_then_scale`; the statistics of pycytominer's scalers);
* :func:`whiten` — pycytominer's spherize (ZCA-cor …) of the whole table or per group, after
  per-plate normalization.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pycytominer

from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import PLATE, feature_columns, metadata_columns

from profiler.nanstats import nanpercentile_columns

from .checks import check_features
from .reference import CONTROLS, describe, reference_mask

NORMALIZE_METHODS = ("standardize", "robustize", "mad_robustize", "spherize")

# pycytominer's ``samples`` is a query; the reference rows travel to it as a boolean row index of this name
_REFERENCE = "_cellfusion_reference_row"


def normalize(profiles: pd.DataFrame, *, method: str = "mad_robustize", samples: str = CONTROLS,
              by: str | None = PLATE, scale_by: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """Normalize each plate (``by``) to the wells selected by ``samples`` (default: the negative controls).

    ``samples="all"`` normalizes to the whole plate; a pandas query selects other wells. A plate
    without any well matching ``samples`` is an error naming the plate. Extra keyword arguments go
    to ``pycytominer.normalize`` (e.g. ``spherize_epsilon``).

    ``scale_by`` (e.g. ``Metadata_Batch``, or ``"all"``) separates the two halves of the
    normalization: each plate is still *centred* on its own controls, but the *spread* that divides
    the features is that of the plate-centred controls pooled over every plate of the ``scale_by``
    group — see :func:`centre_then_scale`. Default ``None``: pycytominer's per-plate normalization.
    With ``scale_by`` the only extra keyword argument is ``mad_robustize_epsilon``.
    """
    if method not in NORMALIZE_METHODS:
        raise ConfigError(f"unknown normalization {method!r}", hint=f"use one of {NORMALIZE_METHODS}")
    feats = check_features(profiles, what="profile table")
    if by is not None and by not in profiles.columns:
        raise InputError(f"cannot normalize per {by!r}: the table has no such column",
                         hint="normalize the whole table with by=None")
    ref = reference_mask(profiles, samples)
    positions = profiles.groupby(by, sort=False).indices if by else {None: np.arange(len(profiles))}
    for key, idx in positions.items():
        if not ref[idx].any():
            where = f"plate {key!r}" if by else "the table"
            raise InputError(f"{where} has no control wells matching {describe(samples)}",
                             hint="mark negative-control wells (control = negative in the platemap), "
                                  "or normalize to the whole plate with samples='all' (--samples all)")
    if scale_by is not None:
        out = centre_then_scale(profiles, feats, ref, method=method, by=by, scale_by=scale_by, **kwargs)
    else:
        # the reference rows travel to pycytominer's query as the (otherwise unused) row index
        table = profiles if samples == "all" else profiles.set_axis(pd.Index(ref, name=_REFERENCE), axis=0)
        query = "all" if samples == "all" else _REFERENCE
        groups = table.groupby(by, sort=False) if by else [(None, table)]
        out = pd.concat([pycytominer.normalize(plate, features=feats, meta_features=metadata_columns(plate),
                                               samples=query, method=method, output_type=None, **kwargs)
                         for _, plate in groups], ignore_index=True)
    return out[metadata_columns(out) + feature_columns(out)]


def centre_then_scale(profiles: pd.DataFrame, feats: Sequence[str], reference: np.ndarray, *, method: str,
                      by: str | None, scale_by: str, mad_robustize_epsilon: float = 1e-18) -> pd.DataFrame:
    """Centre each ``by`` group on its ``reference`` rows; divide by the pooled spread of each ``scale_by`` group.

    Same statistics as pycytominer's methods: ``standardize`` mean / standard deviation (ddof 0),
    ``robustize`` median / interquartile range, ``mad_robustize`` median / 1.4826 × MAD (+ epsilon);
    a zero spread divides by 1, as scikit-learn's scalers do. The spread is computed from the
    plate-centred control wells of all plates in the group, so a group of one plate gives exactly
    pycytominer's per-plate result. Why: with few controls per plate (6 DMSO wells per BBBC021 plate)
    a per-plate spread is mostly sampling noise, while plate-to-plate shifts in location are real;
    :func:`profiler.profiles.diagnostics.control_variation_levels` measures both for a table.
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
    profiles = profiles.reset_index(drop=True)   # positions = labels
    x = profiles[list(feats)].to_numpy(dtype=np.float64, copy=True)
    ctrl = np.asarray(reference, dtype=bool)
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
                q1, q3 = nanpercentile_columns(c, [25, 75])
                spread = q3 - q1
            else:
                spread = 1.4826 * np.nanmedian(np.abs(c - np.nanmedian(c, axis=0)), axis=0) + mad_robustize_epsilon
        if method != "mad_robustize":
            spread = np.where(spread == 0, 1.0, spread)
        x[idx] /= spread
    # the features as one float block (assigning 1,500 columns one by one left 1,500 blocks that made
    # every later step's column selection slow); same columns, order, values and dtypes
    feats = list(feats)
    rest = profiles.drop(columns=feats)
    out = pd.concat([rest, pd.DataFrame(x, columns=feats, index=profiles.index)], axis=1)
    return out[list(profiles.columns)]


def whiten(profiles: pd.DataFrame, *, samples: str = "all", method: str = "ZCA-cor",
           epsilon: float = 1e-6, by: str | None = None) -> pd.DataFrame:
    """Spherize (pycytominer) the whole table or each ``by`` group, fit on the ``samples`` wells.

    Used after per-plate normalization; ``epsilon`` is added to the eigenvalues (a large value
    shrinks the whitening towards plain scaling, which is what small data sets need).
    """
    feats = check_features(profiles, what="profile table", allow_nan=False)
    return normalize(profiles[metadata_columns(profiles) + feats], method="spherize", samples=samples,
                     by=by, spherize_method=method, spherize_epsilon=epsilon)
