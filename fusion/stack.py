"""Stacked fusion: a multinomial logistic regression on the base models' out-of-fold probabilities.

The base models are XGBoost on well profiles (:mod:`fusion.gbm`) and the CNN ensemble's soft vote on
single-cell crops (:mod:`fusion.cnn.ensemble`), whose cell probabilities are averaged per well so
that both speak about the same rows. Out-of-fold probabilities come from folds grouped by compound,
so no compound is both trained on and predicted.

Three couplings of the softmax meta-learner over the log-probabilities ``log p_m(c)`` of the base
models ``m``:

* ``"per_class"`` (default) — a weight per base model *and class*, no cross-class terms:
  ``z_c = Σ_m W[m, c] log p_m(c)``. It learns how far to trust each base model for each class
  (e.g. the CNN for one mechanism, XGBoost for another), with the class weights pulled towards each
  base model's mean weight by the L2 penalty.
* ``"shared"`` — one weight per base model for all classes, ``z_c = Σ_m w_m log p_m(c)``: a
  weighted geometric mean of the base models.
* ``"full"`` — scikit-learn's multinomial :class:`~sklearn.linear_model.LogisticRegression` on all
  ``"<base>:<class>"`` columns (a weight for every input × class pair plus class intercepts). It
  can learn cross-class patterns, and the training folds' class mix with them.

``class_weight="balanced"`` (default) weighs every class equally in the log-loss, so that a
dominant class (the DMSO wells of a plate) does not set the weights for the treatments.
On BBBC021 crops (``benchmarks/bbbc021_fusion.py``, folds grouped by compound) the full model
without class weights fell below both of its inputs; the per-class balanced one is the default.

All three are stored as the same coefficient matrix (classes × inputs; block-diagonal for
``per_class``/``shared``) plus intercepts, so prediction and the JSON file are the same for all.

:class:`StackedClassifier` has the scikit-learn API on the stacked probability table (columns
``"<base>:<class>"``) and is saved as JSON (coefficients, intercepts, classes, input order): loading
it is arithmetic on numbers from a JSON file, never unpickling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from cellfusion_core.errors import InputError, ModelFileError

__all__ = ["StackedClassifier", "stack_inputs", "cell_to_well_proba", "meta_out_of_fold_proba", "FORMAT"]

FORMAT = "cellfusion-stack/1"
COUPLINGS = ("per_class", "shared", "full")


def stack_inputs(probas: Mapping[str, np.ndarray], classes: Sequence) -> pd.DataFrame:
    """Side-by-side probability table, columns ``"<base>:<class>"`` in ``classes`` order per base model."""
    cols: dict[str, np.ndarray] = {}
    n = None
    for base, p in probas.items():
        p = np.asarray(p, dtype=float)
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise InputError(f"base model {base!r} gives probabilities of shape {p.shape}, "
                             f"expected (rows, {len(classes)})")
        if n is not None and len(p) != n:
            raise InputError(f"base model {base!r} has {len(p)} rows, the others {n}")
        n = len(p)
        for j, c in enumerate(classes):
            cols[f"{base}:{c}"] = p[:, j]
    return pd.DataFrame(cols)


class StackedClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on stacked base-model probabilities.

    Parameters
    ----------
    C:
        Inverse L2 regularization strength (scikit-learn's convention: the penalty is
        ``||θ||² / (2C)`` beside the summed, class-weighted log-loss). For ``per_class`` the penalty
        is on each class weight's deviation from its base model's mean weight (plus the means).
    log_inputs:
        Use log-probabilities (clipped at ``1e-6``) as inputs — the natural scale for a softmax
        meta-learner; ``False`` uses raw probabilities.
    max_iter:
        Solver iterations.
    coupling:
        ``"per_class"`` (default), ``"shared"`` or ``"full"`` — see the module docstring.
    class_weight:
        ``"balanced"`` (default): rows weighted by ``n / (n_classes · n_class)``; ``None``: equal rows.
    fit_intercept:
        Per-class intercepts for ``per_class``/``shared`` (``"full"`` always has them). Off by
        default: intercepts learn the training folds' class frequencies.
    """

    def __init__(self, C: float = 1.0, log_inputs: bool = True, max_iter: int = 2000, coupling: str = "per_class",
                 class_weight: str | None = "balanced", fit_intercept: bool = False):
        self.C = C
        self.log_inputs = log_inputs
        self.max_iter = max_iter
        self.coupling = coupling
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept

    def _transform(self, X) -> np.ndarray:
        if isinstance(X, pd.DataFrame) and hasattr(self, "inputs_"):
            missing = [c for c in self.inputs_ if c not in X.columns]
            if missing:
                raise InputError(f"stacked inputs missing: {', '.join(missing[:5])}")
            X = X[list(self.inputs_)]
        Z = np.asarray(X, dtype=float)
        return np.log(np.clip(Z, 1e-6, 1.0)) if self.log_inputs else Z

    def fit(self, X, y):
        """Fit on the stacked out-of-fold probability table ``X`` and labels ``y``."""
        y = np.asarray(y).astype(str)
        if self.coupling not in COUPLINGS:
            raise InputError(f"unknown stack coupling {self.coupling!r}", hint=f"use one of {', '.join(COUPLINGS)}")
        if self.class_weight not in (None, "balanced"):
            raise InputError(f"unknown stack class_weight {self.class_weight!r}", hint="use 'balanced' or None")
        self.inputs_ = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else \
            [f"x{i}" for i in range(np.shape(X)[1])]
        self.n_features_in_ = len(self.inputs_)
        if self.coupling != "full":
            return self._fit_pooled(self._transform(X), y)
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        lr.fit(self._transform(X), y)
        self.classes_ = lr.classes_
        coef, intercept = lr.coef_, lr.intercept_
        if len(self.classes_) == 2:  # sklearn keeps one row for binary; expand to a 2-class softmax
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_, self.intercept_ = coef, intercept
        return self

    def _fit_pooled(self, Z: np.ndarray, y: np.ndarray) -> StackedClassifier:
        """``z_c = Σ_m W[m, c] Z[:, (m, c)] (+ b_c)`` with ``W`` per class or shared, by L-BFGS."""
        from scipy.optimize import minimize

        parsed = [name.split(":", 1) for name in self.inputs_]
        if any(len(p) != 2 for p in parsed):
            raise InputError(f"the {self.coupling!r} stack needs input columns named '<base>:<class>' "
                             "(see stack_inputs)")
        bases = list(dict.fromkeys(b for b, _ in parsed))
        classes = list(dict.fromkeys(c for _, c in parsed))
        col = {(b, c): j for j, (b, c) in enumerate(parsed)}
        missing = [f"{b}:{c}" for b in bases for c in classes if (b, c) not in col]
        if missing:
            raise InputError(f"stacked inputs missing: {', '.join(missing[:5])}")
        unknown = sorted(set(y) - set(classes))
        if unknown:
            raise InputError(f"labels {unknown[:5]} have no base-model probability columns")
        blocks = np.stack([Z[:, [col[(b, c)] for c in classes]] for b in bases])  # (M, n, K)
        M, n, K = blocks.shape
        onehot = (y[:, None] == np.asarray(classes)[None, :]).astype(float)
        if self.class_weight == "balanced":
            counts = onehot.sum(axis=0)
            present = counts > 0
            onehot = onehot * np.where(present, n / (present.sum() * np.maximum(counts, 1)), 0.0)
        per_class = self.coupling == "per_class"
        n_w = M * K if per_class else M
        n_b = K if self.fit_intercept else 0

        def weights(w):  # (M, K): a column per class
            return w.reshape(M, K) if per_class else np.repeat(w[:, None], K, axis=1)

        def loss(theta):
            w, b = theta[:n_w], theta[n_w:]
            W = weights(w)
            z = np.einsum("mk,mnk->nk", W, blocks) + (b if n_b else 0.0)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            g = np.exp(logp) * onehot.sum(axis=1, keepdims=True) - onehot  # d loss / d z (weighted rows)
            gW = np.einsum("mnk,nk->mk", blocks, g)
            if per_class:  # penalty on the deviation from each base model's mean weight, and on the means
                mean = W.mean(axis=1, keepdims=True)
                pen = ((W - mean) ** 2).sum() + (mean ** 2).sum()
                gw = (gW + ((W - mean) + mean / K) / self.C).ravel()
            else:
                pen = (w ** 2).sum()
                gw = gW.sum(axis=1) + w / self.C
            value = -(onehot * logp).sum() + (pen + (b ** 2).sum()) / (2 * self.C)
            return value, np.concatenate([gw, g.sum(axis=0)[:n_b] + b / self.C])

        start = np.concatenate([np.full(n_w, 1.0 / M), np.zeros(n_b)])
        res = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        W, b = weights(res.x[:n_w]), res.x[n_w:]
        self.classes_ = np.asarray(classes, dtype=object)
        coef = np.zeros((K, len(self.inputs_)))
        for m, base in enumerate(bases):
            for k, c in enumerate(classes):
                coef[k, col[(base, c)]] = W[m, k]
        self.coef_ = coef
        self.intercept_ = b if n_b else np.zeros(K)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self._transform(X) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        z = self.decision_function(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def to_json(self) -> dict[str, Any]:
        """Everything needed to predict, as plain JSON values."""
        return {"format": FORMAT, "params": self.get_params(), "classes": [str(c) for c in self.classes_],
                "inputs": list(self.inputs_), "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StackedClassifier:
        """Rebuild from :meth:`to_json` output (checked for shape consistency)."""
        if obj.get("format") != FORMAT:
            raise ModelFileError(f"not a stacked model file (format {obj.get('format')!r}, expected {FORMAT!r})")
        try:
            est = cls(**obj["params"])
            est.classes_ = np.asarray(obj["classes"], dtype=object)
            est.inputs_ = list(obj["inputs"])
            est.coef_ = np.asarray(obj["coef"], dtype=float)
            est.intercept_ = np.asarray(obj["intercept"], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"stacked model file is malformed ({exc})") from exc
        if est.coef_.shape != (len(est.classes_), len(est.inputs_)) or est.intercept_.shape != (len(est.classes_),):
            raise ModelFileError(f"stacked model file is inconsistent: coef {est.coef_.shape}, "
                                 f"{len(est.classes_)} classes, {len(est.inputs_)} inputs")
        est.n_features_in_ = len(est.inputs_)
        return est

    def base_weights(self) -> dict[str, float]:
        """Share of the total |coefficient| on each base model's inputs."""
        from fusion.explain import stack_weights

        return stack_weights(self.to_json())


def cell_to_well_proba(cell_proba: np.ndarray, cell_keys: pd.DataFrame, well_keys: pd.DataFrame) -> np.ndarray:
    """Average cell probabilities per well, in the row order of ``well_keys`` (same key columns).

    A well without cells is an :class:`InputError` (the stack needs both base models on every row).
    """
    keys = list(well_keys.columns)
    df = pd.DataFrame(np.asarray(cell_proba, float)).assign(**{k: cell_keys[k].astype(str).to_numpy() for k in keys})
    mean = df.groupby(keys, sort=False).mean()
    idx = pd.MultiIndex.from_frame(well_keys.astype(str)) if len(keys) > 1 else pd.Index(well_keys[keys[0]].astype(str))
    out = mean.reindex(idx)
    if out.isna().any(axis=None):
        lost = out.index[out.isna().any(axis=1)].tolist()
        raise InputError(f"{len(lost)} well(s) have no cell crops: {lost[:5]}",
                         hint="give crops for every profiled well, or train with --no-cnn")
    return out.to_numpy()


def meta_out_of_fold_proba(stacked: pd.DataFrame, y: np.ndarray, classes: np.ndarray,
                           splits: Sequence[tuple[np.ndarray, np.ndarray]], C: float = 1.0,
                           **params: Any) -> np.ndarray:
    """The stack's own out-of-fold probabilities: meta-learner fit on the other folds' OOF rows.

    ``params`` go to :class:`StackedClassifier` (``coupling``, ``fit_intercept``, …). Folds are
    handled by :func:`fusion.oof.out_of_fold_proba` (a training fold with one class predicts it).
    """
    from fusion.oof import out_of_fold_proba

    return out_of_fold_proba(lambda: StackedClassifier(C=C, **params), stacked, y, None, classes, splits)
