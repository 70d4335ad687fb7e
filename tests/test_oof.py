"""fusion.oof: grouped folds and out-of-fold probabilities (one helper for every model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from fusion.oof import align_proba, cross_val_proba, expand_folds, fold_index, grouped_folds, out_of_fold_proba
from fusion.stack import meta_out_of_fold_proba, stack_inputs
from cellfusion_core.errors import InputError

CLASSES = np.array(["A", "B", "C"])


def _data(seed=0, n_per=20):
    rng = np.random.default_rng(seed)
    y = np.repeat(CLASSES, n_per)
    centers = {"A": [0, 0], "B": [3, 0], "C": [0, 3]}
    X = pd.DataFrame(np.array([centers[c] for c in y]) + rng.normal(0, 0.7, (len(y), 2)), columns=["f0", "f1"])
    groups = np.array([f"{c}{i % 4}" for i, c in enumerate(y)])  # 4 groups per class
    return X, y, groups


def _folds_without_c_in_training_of_fold0(y):
    """Fold 0 tests every C row (and half the others): its training rows have no C."""
    idx = np.arange(len(y))
    te0 = np.concatenate([idx[y == "C"], idx[(y != "C") & (idx % 2 == 0)]])
    te1 = np.setdiff1d(idx, te0)
    return [(te1, te0), (te0, te1)]


def test_fold_missing_a_class_gives_rows_summing_to_one_with_zero_for_it():
    X, y, groups = _data()
    splits = _folds_without_c_in_training_of_fold0(y)
    p = out_of_fold_proba(lambda: LogisticRegression(max_iter=500), X, y, None, CLASSES, splits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    te0 = splits[0][1]
    assert (p[te0, 2] == 0).all()                # C unseen in fold 0's training rows
    assert (p[te0, :2].sum(axis=1) > 0.999).all()  # renormalised over A and B, not a zero row
    # the same contract through scikit-learn's cross_val_predict
    q = cross_val_proba(LogisticRegression(max_iter=500), X, y, CLASSES, splits)
    np.testing.assert_allclose(q, p, atol=1e-8)


def test_matches_sklearn_cross_val_predict_and_keeps_string_labels():
    X, y, groups = _data(1)
    splits = grouped_folds(y, groups, n_splits=4, seed=0)
    ours = out_of_fold_proba(lambda: LogisticRegression(max_iter=500), X, y, groups=None, classes=CLASSES,
                             splits=splits)
    ref = cross_val_predict(LogisticRegression(max_iter=500), X, y, cv=splits, method="predict_proba")
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    # global classes in another order: columns follow it
    order = np.array(["C", "A", "B"])
    np.testing.assert_allclose(cross_val_proba(LogisticRegression(max_iter=500), X, y, order, splits),
                               ref[:, [2, 0, 1]], atol=1e-8)


def test_groups_reach_fit_sliced_to_the_training_fold():
    X, y, groups = _data()
    splits = grouped_folds(y, groups, n_splits=3, seed=0)
    seen = []

    class Spy(LogisticRegression):
        def fit(self, X, y, groups=None):
            seen.append(np.asarray(groups))
            return super().fit(X, y)

    out_of_fold_proba(lambda: Spy(max_iter=200), X, y, groups, CLASSES, splits)
    for (tr, _), g in zip(splits, seen):
        np.testing.assert_array_equal(g, groups[tr])
    seen.clear()
    cross_val_proba(Spy(max_iter=200), X, y, CLASSES, splits, groups=groups)
    assert sorted(map(len, seen)) == sorted(len(tr) for tr, _ in splits)


def test_single_class_training_fold_predicts_that_class():
    y = np.array(["A"] * 4 + ["B"] * 2)
    X = pd.DataFrame({"f": np.arange(6.0)})
    splits = [(np.arange(4), np.arange(4, 6)), (np.arange(4, 6), np.arange(4))]
    p = out_of_fold_proba(lambda: LogisticRegression(), X, y, None, np.array(["A", "B"]), splits)
    np.testing.assert_allclose(p, [[0, 1]] * 4 + [[1, 0]] * 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_stack_oof_has_no_zero_rows_when_a_fold_lacks_classes():
    X, y, _ = _data(2)
    rng = np.random.default_rng(0)
    probas = {b: rng.dirichlet(np.ones(3), len(y)) for b in ("gbm", "cnn")}
    stacked = stack_inputs(probas, CLASSES)
    p = meta_out_of_fold_proba(stacked, y, CLASSES, _folds_without_c_in_training_of_fold0(y))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # a training fold with one class (the old loop skipped it and left rows of zeros)
    idx = np.arange(len(y))
    only_a = [(idx[y == "A"], idx[y != "A"]), (idx[y != "A"], idx[y == "A"])]
    p = meta_out_of_fold_proba(stacked, y, CLASSES, only_a)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[y != "A"], np.tile([1.0, 0.0, 0.0], ((y != "A").sum(), 1)))


def test_grouped_folds_partition_and_never_split_a_group():
    _, y, groups = _data()
    splits = grouped_folds(y, groups, n_splits=4, seed=3)
    fold = fold_index(splits, len(y))
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(len(y)))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    # stratified: 4 groups per class and 4 folds → every test fold holds every class
    for _, te in splits:
        assert set(y[te]) == set(CLASSES)
    with pytest.raises(InputError, match="at least 2 groups"):
        grouped_folds(y, np.zeros(len(y)), 5, 0)


def test_expand_folds_carries_rows_to_their_items():
    splits = [(np.array([1, 2]), np.array([0])), (np.array([0, 2]), np.array([1])), (np.array([0, 1]), np.array([2]))]
    cell_row = np.array([2, 0, 0, 1, 2])
    cells = expand_folds(splits, cell_row)
    for (tr_w, te_w), (tr_c, te_c) in zip(splits, cells):
        assert set(cell_row[te_c]) == set(te_w)
        assert set(cell_row[tr_c]) <= set(tr_w)
    with pytest.raises(ValueError, match="partition"):
        fold_index([(np.array([0]), np.array([1]))], 3)


def test_align_proba_refuses_unknown_classes():
    with pytest.raises(ValueError, match="not among"):
        align_proba(np.ones((1, 1)), ["Z"], CLASSES)
