"""Cross-validation folds and out-of-fold probabilities — the one place ``fusion`` builds them.

* :func:`grouped_folds` — grouped folds (no group in a training and a test fold at once),
  stratified by class when every class spans enough groups.
* :func:`fold_index` — the fold number of every row; :func:`expand_folds` — the same folds over
  items that belong to rows (single cells of wells), so a CNN on crops and XGBoost on profiles
  hold out the same wells.
* :func:`cross_val_proba` — scikit-learn's :func:`~sklearn.model_selection.cross_val_predict`
  (``method="predict_proba"``) on explicit folds, columns aligned to the global ``classes``. Use it
  for any scikit-learn estimator that accepts label-encoded ``y`` (:class:`fusion.gbm.GBMClassifier`).
* :func:`out_of_fold_proba` — the same contract for the estimators ``cross_val_predict`` does not
  fit: the stack's meta-learner (its input columns are named by class, so it must see the labels
  themselves, not ``cross_val_predict``'s integer codes), and the CNN ensemble (hours per fold:
  it reports progress after each fold). A fresh estimator per fold from a factory.

Both return an ``(n_rows, n_classes)`` array whose columns follow ``classes``. A class missing
from a training fold gets probability 0 in that fold's test rows and the row is renormalised over
the classes the fold's model has seen, so every row sums to 1 (no all-zero rows); a training fold
with a single class predicts that class with probability 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, cross_val_predict

from profiler.errors import InputError

__all__ = ["Folds", "grouped_folds", "fold_index", "expand_folds", "align_proba", "cross_val_proba",
           "out_of_fold_proba"]

#: A list of ``(train_indices, test_indices)`` pairs whose test parts partition the rows.
Folds = list[tuple[np.ndarray, np.ndarray]]


def grouped_folds(y: Sequence, groups: Sequence, n_splits: int = 5, seed: int = 0) -> Folds:
    """Grouped folds over the rows (``k = min(n_splits, number of groups)``).

    :class:`~sklearn.model_selection.StratifiedGroupKFold` when every class spans at least ``k``
    groups, else :class:`~sklearn.model_selection.GroupKFold` (shuffled by ``seed``). No group is
    ever in a training and a test fold at once. Fewer than 2 groups is an :class:`InputError`.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    if len(y) != len(groups):
        raise ValueError(f"{len(y)} labels but {len(groups)} group labels")
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise InputError(f"cross-validation needs at least 2 groups, found {n_groups}",
                         hint="give more wells, or group by a column with more values (--group-by)")
    per_class_groups = pd.Series(groups).groupby(y).nunique()
    if per_class_groups.min() >= k:
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        cv = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(np.zeros(len(y)), y, groups)]


def fold_index(splits: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Fold number (0 … k-1) of each of the ``n`` rows: the fold in which it is a test row."""
    fold = np.full(n, -1, dtype=np.int64)
    for i, (_, te) in enumerate(splits):
        fold[te] = i
    if (fold < 0).any():
        raise ValueError(f"{int((fold < 0).sum())} row(s) are in no test fold: the folds do not partition the rows")
    return fold


def expand_folds(splits: Sequence[tuple[np.ndarray, np.ndarray]], row_of: Sequence[int]) -> Folds:
    """The row folds carried over to items of those rows (e.g. cells of wells).

    ``row_of[i]`` is the row (well) item ``i`` (a cell) belongs to. Item ``i`` is a test item in the
    fold where its row is a test row, so a model on items never trains on a held-out row's items.
    """
    row_of = np.asarray(row_of, dtype=np.int64)
    n_rows = max((int(np.max(te)) + 1 for _, te in splits if len(te)), default=0)
    fold = fold_index(splits, n_rows)[row_of]
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(len(splits))]


def align_proba(proba: np.ndarray, est_classes: Sequence, classes: Sequence) -> np.ndarray:
    """Put probabilities over ``est_classes`` into the columns of ``classes``; renormalise rows.

    Classes the model never saw get 0; each row is divided by its sum over the seen classes (a
    row that sums to 0 becomes uniform over them), so rows sum to 1.
    """
    proba = np.asarray(proba, dtype=float)
    col = {str(c): i for i, c in enumerate(classes)}
    unknown = [c for c in map(str, est_classes) if c not in col]
    if unknown:
        raise ValueError(f"the model predicts classes not among the global classes: {unknown[:5]}")
    out = np.zeros((len(proba), len(classes)))
    idx = [col[str(c)] for c in est_classes]
    out[:, idx] = proba
    total = out.sum(axis=1, keepdims=True)
    zero = total[:, 0] <= 0
    if zero.any():
        out[np.ix_(zero, idx)] = 1.0 / len(idx)
        total[zero] = 1.0
    return out / total


def cross_val_proba(estimator: Any, X: Any, y: Sequence, classes: Sequence,
                    splits: Sequence[tuple[np.ndarray, np.ndarray]], *, groups: Sequence | None = None,
                    n_jobs: int | None = None) -> np.ndarray:
    """:func:`sklearn.model_selection.cross_val_predict` probabilities on ``splits``, columns = ``classes``.

    ``groups`` is routed to ``estimator.fit(X, y, groups=…)`` (sliced to each training fold), as
    :class:`fusion.gbm.GBMClassifier` uses it for grouped early stopping. ``y`` must contain only
    values of ``classes``.
    """
    y = np.asarray(y).astype(str)
    seen = np.unique(y)  # cross_val_predict's column order (its LabelEncoder's classes)
    params = {"groups": np.asarray(groups)} if groups is not None else None
    p = cross_val_predict(estimator, X, y, cv=list(splits), method="predict_proba", params=params, n_jobs=n_jobs)
    return align_proba(p, seen, classes)


def out_of_fold_proba(make_estimator: Callable[[], Any], X: Any, y: Sequence, groups: Sequence | None,
                      classes: Sequence, splits: Sequence[tuple[np.ndarray, np.ndarray]], *,
                      progress: Callable[[], Any] | None = None) -> np.ndarray:
    """Out-of-fold probabilities (columns = ``classes``) of a fresh ``make_estimator()`` per fold.

    ``X`` is anything indexable by row positions (a DataFrame — indexed with ``.iloc`` — or an
    array of images). The estimator is fit as ``fit(X[train], y[train], groups=groups[train])``
    (without ``groups`` when it is ``None``) and must have ``predict_proba`` and ``classes_``.
    ``progress()`` is called after each fold. See the module docstring for missing classes.
    """
    y = np.asarray(y)
    groups = None if groups is None else np.asarray(groups)
    proba = np.zeros((len(y), len(classes)))

    def rows(idx):
        return X.iloc[idx] if isinstance(X, (pd.DataFrame, pd.Series)) else X[idx]

    for tr, te in splits:
        seen = np.unique(y[tr])
        if len(te) == 0:
            pass
        elif len(seen) == 1:  # nothing to learn: the only class seen gets probability 1
            proba[te] = align_proba(np.ones((len(te), 1)), seen, classes)
        else:
            est = make_estimator()
            if groups is None:
                est.fit(rows(tr), y[tr])
            else:
                est.fit(rows(tr), y[tr], groups=groups[tr])
            proba[te] = align_proba(est.predict_proba(rows(te)), est.classes_, classes)
        if progress is not None:
            progress()
    return proba
