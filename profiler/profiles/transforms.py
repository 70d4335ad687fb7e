"""Transforms of normalized profiles as scikit-learn transformers: fit on the reference rows, transform all.

Each class is a ``TransformerMixin``/``BaseEstimator`` on a wells × features array: ``fit`` sees
only the reference rows (the negative controls by default), ``transform`` any rows. Arrays are
taken column-major (:func:`_columns`), as pandas stores a table's float columns: reductions and
matrix products then add in the same order whatever the caller's layout, so a result does not
change in its last bits with how the input was sliced. The
"fit on the control wells, apply to every well" idiom lives once, in :func:`fit_transform_table`
(per ``by`` group: the reference rows of :func:`profiler.profiles.reference.reference_mask`, a
fresh clone of the transformer fit on them, every row of the group transformed). The table
functions below are the ones recipes and callers use:

* :func:`clip_features` (:class:`Clip`) and :func:`asinh_features` (:class:`Asinh`) — hard and
  soft bounds of normalized features (stateless; no pycytominer counterpart);
* :func:`typical_variation_normalize` (:class:`TypicalVariation`) — Ledoit–Wolf shrinkage ZCA
  whitening or TVN PCA whitening (Ando et al. 2017) fit on the controls: regularized whitening that
  pycytominer's ``spherize`` (``normalize(method="spherize")``) does not offer;
* :func:`factor_analysis` (:class:`FactorScores`) — scikit-learn ``FactorAnalysis`` (Ljosa et al.
  2013) fit on the controls;
* :func:`bound_ensemble` (:class:`BoundEnsemble`) — clip × TVN over a grid, blocks of unit length.
"""

from __future__ import annotations

import logging
import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.decomposition import FactorAnalysis

from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import metadata_columns

from .checks import check_features
from .reference import CONTROLS, describe, reference_mask

log = logging.getLogger(__name__)

TVN_METHODS = ("ledoit_wolf", "pca")


# --------------------------------------------------------------------------------------------
# the one "fit on the reference rows, transform all" helper

def fit_transform_table(transformer: BaseEstimator, profiles: pd.DataFrame, *, samples: str = CONTROLS,
                        by: str | None = None, min_reference: int = 1, what: str = "this step") -> pd.DataFrame:
    """Fit a clone of ``transformer`` on the ``samples`` rows of each ``by`` group; transform every row.

    Returns the metadata columns + the transformed features, named by the fitted transformer's
    ``get_feature_names_out(features)``; groups are concatenated in order of first appearance. Needs
    finite features. A group with fewer than ``min_reference`` reference rows is an :class:`InputError`.
    """
    feats = check_features(profiles, what="profile table", allow_nan=False)
    meta = metadata_columns(profiles)
    if by is not None and by not in profiles.columns:
        raise InputError(f"cannot fit {what} per {by!r}: the table has no such column")
    ref = reference_mask(profiles, samples)
    positions = profiles.groupby(by, sort=False).indices if by else {None: np.arange(len(profiles))}
    parts = []
    for key, idx in positions.items():
        where = f"group {key!r}" if by else "the table"
        grp_ref = ref[idx]
        if grp_ref.sum() < min_reference:
            raise InputError(f"{where} has {int(grp_ref.sum())} wells matching {describe(samples)}; "
                             f"{what} needs >= {min_reference}",
                             hint="fit on the whole table (by: null) or on all wells (samples: all)")
        grp = profiles.iloc[idx] if by else profiles
        x = grp[feats].to_numpy(dtype=np.float64)
        fitted = clone(transformer).fit(x[grp_ref])
        y = fitted.transform(x)
        cols = [str(c) for c in fitted.get_feature_names_out(feats)]
        parts.append(pd.concat([grp[meta].reset_index(drop=True), pd.DataFrame(y, columns=cols)], axis=1))
    if len({tuple(p.columns) for p in parts}) > 1:
        raise InputError(f"the groups of {by!r} kept different numbers of components",
                         hint="use method 'ledoit_wolf' per group, or fit 'pca' on the whole table")
    return pd.concat(parts, ignore_index=True)


def _columns(X) -> np.ndarray:
    """``X`` as a column-major float64 array (no copy when it already is one)."""
    return np.asfortranarray(X, dtype=np.float64)


def _numbered(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}_{i + 1:04d}" for i in range(n)], dtype=object)


# --------------------------------------------------------------------------------------------
# bounds (stateless)

class Clip(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Bound every feature to ±``bound`` (NaN kept)."""

    def __init__(self, bound: float = 5.0):
        self.bound = bound

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=np.float64), -self.bound, self.bound)


class Asinh(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Soft bound ``scale * arcsinh(x / scale)``: linear for ``|x| << scale``, logarithmic beyond."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def fit(self, X, y=None):
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"asinh scale must be a positive number, got {self.scale!r}")
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X):
        return self.scale * np.arcsinh(np.asarray(X, dtype=np.float64) / self.scale)


def clip_features(profiles: pd.DataFrame, bound: float) -> pd.DataFrame:
    """Bound every feature to ±``bound`` (after normalization to controls: robust z-scores)."""
    feats = check_features(profiles, what="profile table")
    # in numpy: a frame built column by column has one block per column, and DataFrame.clip /
    # column-list assignment then work block by block (seconds for 2,000 features)
    x = Clip(bound).fit_transform(profiles[feats].to_numpy(dtype=np.float64, na_value=np.nan))
    clipped = pd.DataFrame(x, index=profiles.index, columns=feats)
    return pd.concat([profiles.drop(columns=feats), clipped], axis=1)[profiles.columns]


def asinh_features(profiles: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """Soft bound: ``scale * arcsinh(x / scale)`` on every feature (after normalization to controls).

    Linear for ``|x| << scale``, logarithmic beyond, sign kept: large robust z-scores are compressed
    instead of cut off at a hard bound (:func:`clip_features`), so strong phenotypes keep their order.
    """
    feats = check_features(profiles, what="profile table")
    out = profiles.copy()
    out[feats] = Asinh(scale).fit_transform(out[feats].to_numpy(dtype=np.float64))
    return out


# --------------------------------------------------------------------------------------------
# whitening with the controls' covariance

class TypicalVariation(TransformerMixin, BaseEstimator):
    """Whiten with the covariance of the rows it is fit on (the control wells).

    * ``method="ledoit_wolf"`` — ZCA whitening with the Ledoit–Wolf shrunk covariance (shrinkage
      chosen analytically, no parameter), centred on the reference mean; as many outputs as
      features. ``epsilon`` is not used.
    * ``method="pca"`` — TVN (Ando et al. 2017): PCA of the reference rows, components with zero
      variance (rank deficiency: at most one per reference row) dropped, each component divided by
      ``sqrt(eigenvalue + epsilon * mean eigenvalue)``.

    ``clip`` bounds the output to ±clip.
    """

    def __init__(self, method: str = "ledoit_wolf", epsilon: float = 1.0, clip: float | None = None):
        self.method = method
        self.epsilon = epsilon
        self.clip = clip

    def fit(self, X, y=None):
        if self.method not in TVN_METHODS:
            raise ConfigError(f"unknown typical-variation method {self.method!r}", hint=f"use one of {TVN_METHODS}")
        r = _columns(X)
        if self.method == "ledoit_wolf":
            from sklearn.covariance import LedoitWolf

            est = LedoitWolf().fit(r)
            vals, vecs = np.linalg.eigh(est.covariance_)
            self.location_ = est.location_
            self.scaled_vectors_ = vecs / np.sqrt(np.maximum(vals, 1e-12))
            self.vectors_ = vecs
        else:
            self.location_, self.eigenvalues_, self.components_ = _pca(r)
            self.projection_ = self._projection()
        return self

    def _projection(self) -> np.ndarray:
        return self.components_.T / np.sqrt(self.eigenvalues_ + self.epsilon * self.eigenvalues_.mean())

    def with_epsilon(self, epsilon: float) -> TypicalVariation:
        """A copy of this fitted ``pca`` whitening with another ``epsilon`` (the PCA is not recomputed)."""
        other = copy.copy(self)
        other.epsilon = epsilon
        other.projection_ = other._projection()
        return other

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The input names (``ledoit_wolf``) or ``TVN_0001`` … (``pca``)."""
        if self.method == "ledoit_wolf":
            return np.asarray(input_features if input_features is not None
                              else [f"x{i}" for i in range(len(self.location_))], dtype=object)
        return _numbered("TVN", len(self.eigenvalues_))

    def transform(self, X):
        x = _columns(X)
        if self.method == "ledoit_wolf":
            y = (x - self.location_) @ self.scaled_vectors_ @ self.vectors_.T
        else:
            y = (x - self.location_) @ self.projection_
        if self.clip is not None:
            y = np.clip(y, -self.clip, self.clip)
        return y


def _pca(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, eigenvalues (ddof 1) and components of ``r``, components of (near-)zero variance dropped."""
    mu = r.mean(axis=0)
    _, sv, vt = np.linalg.svd(r - mu, full_matrices=False)
    ev = sv ** 2 / (len(r) - 1)
    keep = ev > 1e-6 * ev[0]
    return mu, ev[keep], vt[keep]


def typical_variation_normalize(profiles: pd.DataFrame, *, samples: str = CONTROLS,
                                method: str = "ledoit_wolf", epsilon: float = 1.0, by: str | None = None,
                                clip: float | None = None) -> pd.DataFrame:
    """Typical variation normalization: whiten with the covariance of the control wells (:class:`TypicalVariation`).

    What pycytominer's spherize does not offer (its only regularization is an additive epsilon,
    which with fewer control wells than features either amplifies noise or barely whitens).
    ``ledoit_wolf`` keeps the feature names; ``pca`` gives columns ``TVN_0001`` … Fit on the
    ``samples`` wells of the whole table or of each ``by`` group (e.g. ``Metadata_Batch``); needs
    >= 3 of them per group. ``clip`` bounds the result to ±clip (a few extreme wells otherwise
    dominate cosine similarities). Needs finite features.
    """
    if method not in TVN_METHODS:
        raise ConfigError(f"unknown typical-variation method {method!r}", hint=f"use one of {TVN_METHODS}")
    return fit_transform_table(TypicalVariation(method=method, epsilon=epsilon, clip=clip), profiles,
                               samples=samples, by=by, min_reference=3, what="typical variation")


class FactorScores(FactorAnalysis):
    """scikit-learn ``FactorAnalysis`` whose outputs are named ``FA_0001`` …"""

    def fit(self, X, y=None):
        return super().fit(_columns(X), y)

    def transform(self, X):
        return super().transform(_columns(X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return _numbered("FA", self.components_.shape[0])


def factor_analysis(profiles: pd.DataFrame, *, n_factors: int = 50, samples: str = CONTROLS,
                    seed: int = 0) -> pd.DataFrame:
    """Factor scores (scikit-learn ``FactorAnalysis``, as Ljosa et al. 2013) fit on the ``samples`` wells.

    Columns ``FA_0001`` …; the model is fit on the wells matching ``samples`` (``"all"``: every well)
    and every well is projected. Needs finite features.
    """
    feats = check_features(profiles, what="profile table", allow_nan=False)
    n_ref = int(reference_mask(profiles, samples).sum())
    if not 1 <= n_factors <= min(n_ref, len(feats)):
        raise ConfigError(f"n_factors must be between 1 and min(wells, features) = {min(n_ref, len(feats))}, "
                          f"got {n_factors}", hint="fewer factors, or fit on all wells (samples: all)")
    return fit_transform_table(FactorScores(n_components=n_factors, random_state=seed), profiles,
                               samples=samples, what="factor analysis")


# --------------------------------------------------------------------------------------------
# the bound ensemble

class BoundEnsemble(TransformerMixin, BaseEstimator):
    """For every ``clip`` bound (``None``: unbounded) × TVN ``epsilon``: clip, TVN-PCA whiten, scale to unit length.

    Fit: the TVN PCA of the clipped reference rows (one per bound; the epsilons reuse it).
    Transform: the blocks side by side, ``clip`` outer, ``epsilon`` inner; each block has unit
    length per row (a zero row stays zero), so the cosine similarity of two rows on the
    concatenation is the mean of their cosine similarities over the settings.
    """

    def __init__(self, clip: Sequence[float | None] = (2, 3, 4, 5, 6, 8, None),
                 epsilon: Sequence[float] = (0.1, 1.0, 10.0)):
        self.clip = clip
        self.epsilon = epsilon

    def check_params(self) -> tuple[list, list]:
        """The grid, after checking it (a :class:`ConfigError` otherwise)."""
        clips, epss = list(self.clip), list(self.epsilon)
        if not clips or not epss:
            raise ConfigError("bound_ensemble needs at least one clip bound and one epsilon")
        for c in clips:
            if c is not None and (not np.isfinite(c) or c <= 0):
                raise ConfigError(f"bound_ensemble clip bounds must be positive numbers or null, got {c!r}")
        return clips, epss

    def fit(self, X, y=None):
        clips, epss = self.check_params()
        r = _columns(X)
        self.blocks_ = []   # (clip, epsilon, fitted TypicalVariation)
        for c in clips:
            rc = Clip(float(c)).fit_transform(r) if c is not None else r
            base = TypicalVariation(method="pca").fit(rc)
            self.blocks_.extend((c, float(e), base.with_epsilon(float(e))) for e in epss)
        return self

    def transform(self, X):
        x = _columns(X)
        out, clipped = [], {}
        for k, (c, e, tvn) in enumerate(self.blocks_, start=1):
            if c not in clipped:
                clipped[c] = Clip(float(c)).fit_transform(x) if c is not None else x
            y = _columns(tvn.transform(clipped[c]))
            norm = np.linalg.norm(y, axis=1, keepdims=True)
            out.append(np.divide(y, norm, out=np.zeros_like(y), where=norm > 0))
            log.info("bound_ensemble block B%02d: clip %s, TVN epsilon %g", k, c, e)
        return np.hstack(out)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``B01_TVN_0001`` …: block ``k``'s TVN columns prefixed ``Bkk_``."""
        return np.array([f"B{k:02d}_{name}" for k, (_, _, tvn) in enumerate(self.blocks_, start=1)
                         for name in tvn.get_feature_names_out()], dtype=object)


def bound_ensemble(profiles: pd.DataFrame, *, clip: Sequence[float | None] = (2, 3, 4, 5, 6, 8, None),
                   epsilon: Sequence[float] = (0.1, 1.0, 10.0),
                   samples: str = CONTROLS) -> pd.DataFrame:
    """Bound and whiten over a whole grid of settings instead of choosing one (:class:`BoundEnsemble`).

    For every ``clip`` bound (``None``: unbounded) and every TVN ``epsilon``, the normalized
    profiles are clipped (:func:`clip_features`) and whitened on the control wells
    (:func:`typical_variation_normalize`, ``method="pca"``); each resulting block is scaled to unit
    length per well and the blocks are concatenated (columns ``B01_TVN_0001`` …, block order =
    ``clip`` outer, ``epsilon`` inner). The cosine similarity of two wells on the concatenation is
    then the mean of their cosine similarities over the settings, so no bound or whitening strength
    has to be picked (on BBBC021 no label-free score picked them well; docs/profiles.md).
    """
    step = BoundEnsemble(clip=list(clip), epsilon=list(epsilon))
    step.check_params()
    return fit_transform_table(step, profiles, samples=samples, min_reference=3, what="typical variation")
