""""Is this well perturbed?": ROC AUC for two-class labels, `fusion train --label perturbed`
(controls vs everything else, compound-grouped folds) and the per-treatment activity table of
`profiler evaluate`."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.metrics import classification_summary, roc_auc_summary


def test_roc_auc_matches_sklearn_and_baselines_are_half():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.array(["control"] * 40 + ["perturbed"] * 60)
    p = np.round(np.r_[rng.uniform(0, 0.6, 40), rng.uniform(0.4, 1, 60)], 1)   # ties on purpose
    s = classification_summary(y, np.where(p > 0.5, "perturbed", "control"), np.c_[1 - p, p],
                               ["control", "perturbed"])
    auc = s["scores"]["roc_auc"]
    assert auc["value"] == pytest.approx(roc_auc_score(y == "perturbed", p))
    assert auc["majority"] == 0.5 and auc["chance"] == 0.5
    assert auc["ci95"][0] < auc["value"] < auc["ci95"][1]
    # a reversed score is below chance; a multi-class label gets no roc_auc
    assert roc_auc_summary(y == "perturbed", -p)["value"] == pytest.approx(1 - auc["value"])
    y3 = np.array(list("abc") * 10)
    s3 = classification_summary(y3, y3, np.eye(3)[np.arange(30) % 3], list("abc"))
    assert "roc_auc" not in s3["scores"]
