"""Cross-validation folds and out-of-fold probabilities — the one place ``fusion`` builds them.

* :func:`choose_grouping` — which rows must never be split between training and test folds,
  following from the label (DESIGN.md: leakage-proof by default): a label other than the compound
  → whole compounds are held out; the compound itself → replicate plates (≥ 2 plates), else wells.
  :func:`grouping_limits` lists the classes that cannot be predicted under that grouping.
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, cross_val_predict

from cellfusion_core.columns import ColumnSpec, control_mask
from cellfusion_core.errors import InputError

__all__ = ["Folds", "Grouping", "choose_grouping", "grouping_limits", "grouped_folds", "fold_index", "expand_folds", "align_proba", "cross_val_proba",
           "out_of_fold_proba"]

#: A list of ``(train_indices, test_indices)`` pairs whose test parts partition the rows.
Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Grouping:
    """How rows are grouped for cross-validation, and why.

    ``groups`` holds one group label per row; ``rule`` is ``"compound"``, ``"plate"``, ``"well"``
    or ``"given"``; ``columns`` the columns the labels were made from; ``reason`` one sentence for
    the report; ``notes`` what a reader must keep in mind (e.g. what well grouping measures).
    """

    groups: np.ndarray
    rule: str
    columns: list[str]
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-row labels)."""
        return {"rule": self.rule, "columns": list(self.columns), "reason": self.reason, "notes": list(self.notes),
                "n_groups": int(len(np.unique(self.groups)))}


def _join(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    return df[list(cols)].astype(object).fillna("").astype(str).agg("/".join, axis=1).to_numpy()


def choose_grouping(profiles: pd.DataFrame, label: str, columns: ColumnSpec,
                    group_by: str | Sequence[str] | None = None) -> Grouping:
    """The cross-validation groups of ``profiles`` for predicting ``label``.

    * ``group_by`` given: its column(s), as given.
    * ``label`` is not the compound and the table has a compound column: by compound (no compound
      in a training and a test fold at once — the honest test for a mechanism-of-action label).
      Negative-control rows (:func:`cellfusion_core.columns.control_mask`) are one compound seen on every
      plate; they are grouped by plate (by well on a single plate), so the control class is learnt
      from other plates' controls.
    * ``label`` is the compound: by plate when there are ≥ 2 plates (replicate plates held out),
      else by well — which measures how consistent replicate wells are, not how a compound's
      profile carries to a new plate.
    * no compound column: by well, with a note that the score may include the compound identity.
    """
    plate, well = columns.plate, columns.well
    well_cols = [c for c in (plate, well) if c is not None]
    if group_by:
        cols = [group_by] if isinstance(group_by, str) else list(group_by)
        missing = [c for c in cols if c not in profiles.columns]
        if missing:
            raise InputError(f"cannot group rows: column(s) {', '.join(missing)} missing from the profile table",
                             hint="pass --group-by with a column that exists (e.g. Metadata_Compound)")
        return Grouping(_join(profiles, cols), "given", cols, f"grouped by {', '.join(cols)} (--group-by)")
    if not well_cols:
        raise InputError("cannot group rows: the profile table has no plate or well column",
                         hint="pass --group-by with a column that exists (e.g. Metadata_Compound)")
    compound = columns.compound
    if compound is not None and label != compound:
        groups = _join(profiles, [compound])
        ctrl = control_mask(profiles, columns)
        notes = []
        if ctrl.any():
            by = [plate] if plate is not None and profiles[plate].nunique() >= 2 else well_cols
            groups = np.where(ctrl, "control/" + _join(profiles, by), "compound/" + groups)
            notes.append(f"{int(ctrl.sum())} negative-control row(s) grouped by {' + '.join(by)} "
                         "(the control is one compound on every plate)")
        return Grouping(groups, "compound", [compound], f"leave-compound-out: the label {label} is not the "
                        f"compound, so whole compounds ({compound}) are held out and the score measures "
                        "prediction for compounds the model has never seen", notes)
    if compound is not None and plate is not None and profiles[plate].nunique() >= 2:
        return Grouping(_join(profiles, [plate]), "plate", [plate],
                        f"leave-plate-out: the label is the compound ({compound}), so replicate plates are held "
                        "out and the score measures recognising a compound on a plate the model has not seen")
    if compound is not None:
        return Grouping(_join(profiles, well_cols), "well", well_cols,
                        f"by well: the label is the compound ({compound}) and there is one plate",
                        ["grouping by well measures replicate consistency (how alike a compound's replicate wells "
                         "on the same plate are), not generalisation to new plates"])
    return Grouping(_join(profiles, well_cols), "well", well_cols,
                    "by well: no compound column was found (name it with --compound)",
                    [f"wells of one compound can be in training and test folds: if {label} is shared by several "
                     "compounds, the score can reward recognising the compound; pass --compound or --group-by"])


def grouping_limits(y: Sequence, groups: Sequence, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
                    ) -> dict[str, Any]:
    """Classes the grouping leaves unpredictable, and the accuracy ceiling they imply.

    A class whose rows all fall in fewer than 2 groups is never in a training fold when it is
    tested, so its rows cannot be predicted right: ``single_group_classes`` maps each such class to
    its row count; ``accuracy_ceiling`` is the fraction of rows that can be right, i.e. the rows
    whose class is in their fold's training rows (computed on ``splits`` when given, else
    ``1 - rows of single-group classes / rows``).
    """
    y, groups = np.asarray(y).astype(str), np.asarray(groups)
    per_class = pd.Series(groups).groupby(y).nunique()
    single = {str(c): int((y == c).sum()) for c in per_class.index[per_class < 2]}
    if splits is None:
        ceiling = 1.0 - sum(single.values()) / max(len(y), 1)
    else:
        ok = np.zeros(len(y), dtype=bool)
        for tr, te in splits:
            ok[te] = np.isin(y[te], np.unique(y[tr]))
        ceiling = float(ok.mean()) if len(y) else 1.0
    return {"single_group_classes": single, "accuracy_ceiling": float(ceiling)}


def grouped_folds(y: Sequence, groups: Sequence, n_splits: int = 5, seed: int = 0) -> Folds:
    """Grouped folds over the rows (``k = min(n_splits, number of groups)``), stratified by class.

    :class:`~sklearn.model_selection.StratifiedGroupKFold` (shuffled by ``seed``): it spreads each
    class's groups over the folds as evenly as it can, also for a class with fewer than ``k``
    groups. (Plain :class:`~sklearn.model_selection.GroupKFold`, used here before for such classes,
    put all compounds of a two-compound MoA in one test fold by chance; on the Ljosa BBBC021 table
    that left 6–21 % of the wells unpredictable depending on the seed.) ``GroupKFold`` remains the
    fallback if scikit-learn refuses to stratify. No group is ever in a training and a test fold
    at once. Fewer than 2 groups is an :class:`InputError`.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    if len(y) != len(groups):
        raise ValueError(f"{len(y)} labels but {len(groups)} group labels")
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise InputError(f"cross-validation needs at least 2 groups, found {n_groups}",
                         hint="give more wells, or group by a column with more values (--group-by)")
    try:
        folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    except ValueError:  # scikit-learn could not stratify these labels
        folds = list(GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    if any(len(te) == 0 for _, te in folds):
        folds = list(GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    return [(np.asarray(tr), np.asarray(te)) for tr, te in folds]


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
