"""Label-free diagnostics of the control wells: at which level (plate, batch) do their location and spread vary?

:func:`control_variation_levels` guides the normalization levels (centre per plate, pool the spread
per batch with ``normalize(scale_by=...)``); ``profiler evaluate --levels`` prints it. No pycytominer
counterpart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellfusion_core.errors import InputError
from cellfusion_core.names import BATCH, PLATE

from .checks import check_features
from .reference import CONTROLS, reference_mask


def control_variation_levels(profiles: pd.DataFrame, *, samples: str = CONTROLS,
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

    Each entry: ``median_ratio`` over features and ``fraction_above_2``. Uses the control wells (``samples``, default the negative controls) and
    the plate/batch columns only. Choose the normalization levels from it: centre per plate when
    plate locations vary, pool the spread per batch (``scale_by``) when spreads vary between
    batches but not between the plates of a batch.
    """
    for col in (plate, batch):
        if col not in profiles.columns:
            raise InputError(f"control variation levels need a {col!r} column", hint="annotate plates and batches")
    ctrl = profiles[reference_mask(profiles, samples)]
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
