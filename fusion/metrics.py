"""Classification metrics beside the baselines that make them meaningful.

Every score is reported with a bootstrap 95 % confidence interval (resampling the evaluated rows)
and beside two baselines computed on the same rows:

* **majority** — always predict the most frequent class of the labels;
* **chance** — the expected score of guessing at random with the label frequencies
  (uniform guessing for balanced accuracy and top-3 accuracy).

A two-class label also gets ``roc_auc`` (of the second class's probability, classes sorted): both
baselines score 0.5, since a constant or random score ranks no row above another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

__all__ = ["classification_summary", "top_k_accuracy", "bootstrap_ci", "SCORES", "beats_baseline",
           "treatment_level", "roc_auc_summary"]

SCORES = ("accuracy", "balanced_accuracy", "f1_weighted", "top3_accuracy")


def top_k_accuracy(y_true: np.ndarray, proba: np.ndarray, classes: Sequence, k: int = 3) -> float:
    """Fraction of rows whose true class is among the ``k`` most probable."""
    classes = np.asarray(classes)
    k = min(k, len(classes))
    top = np.argsort(-proba, axis=1)[:, :k]
    idx = {c: i for i, c in enumerate(classes)}
    t = np.array([idx.get(v, -1) for v in y_true])
    return float(np.mean((top == t[:, None]).any(axis=1)))


def _codes(y: np.ndarray, classes) -> np.ndarray:
    idx = {str(c): i for i, c in enumerate(classes)}
    return np.array([idx.get(str(v), len(idx)) for v in y], dtype=np.int64)


def _fast(name: str, yi: np.ndarray, pi: np.ndarray, proba: np.ndarray | None, k: int) -> float:
    """Score on integer-coded labels (code k = a label outside ``classes``)."""
    if name == "accuracy":
        return float(np.mean(yi == pi))
    cm = np.bincount(yi * (k + 1) + pi, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
    support = cm.sum(axis=1)
    tp = np.diag(cm)
    present = support > 0
    if name == "balanced_accuracy":
        return float(np.mean(tp[present] / support[present]))
    if name == "f1_weighted":
        predicted = cm.sum(axis=0)
        denom = support + predicted
        f1 = np.divide(2 * tp, denom, out=np.zeros(len(tp), float), where=denom > 0)
        return float(np.sum(f1 * support) / support.sum())
    if name == "top3_accuracy":
        if proba is None:
            return float("nan")
        top = np.argsort(-proba, axis=1)[:, :min(3, k)]
        return float(np.mean((top == yi[:, None]).any(axis=1)))
    raise KeyError(name)


def _score(name: str, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes) -> float:
    return _fast(name, _codes(y, classes), _codes(pred, classes), proba, len(classes))


def bootstrap_ci(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes, name: str,
                 n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % CI of score ``name`` (resampling rows)."""
    rng = np.random.default_rng(seed)
    yi, pi, k = _codes(y, classes), _codes(pred, classes), len(classes)
    n = len(yi)
    vals = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, n, n)
        vals[b] = _fast(name, yi[i], pi[i], None if proba is None else proba[i], k)
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def _chance(name: str, y: np.ndarray, classes) -> float:
    _, counts = np.unique(y, return_counts=True)
    p = counts / counts.sum()
    k = len(classes)
    if name in ("accuracy", "f1_weighted"):
        return float(np.sum(p ** 2))  # guessing with the label frequencies
    if name == "balanced_accuracy":
        return 1.0 / len(p)
    if name == "top3_accuracy":
        return min(3, k) / k
    raise KeyError(name)


def classification_summary(y_true: Sequence, y_pred: Sequence, proba: np.ndarray | None,
                           classes: Sequence, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Scores, their bootstrap CIs, the majority and chance baselines, and per-class P/R/F1.

    Returns a JSON-able dict: ``{"n": …, "majority_class": …, "scores": {name: {"value", "ci95",
    "majority", "majority_ci95", "chance"}}, "per_class": {class: {precision, recall, f1, support,
    majority_f1}}, "predicted_class_fractions": {…}}``.
    """
    y = np.asarray(y_true).astype(str)
    pred = np.asarray(y_pred).astype(str)
    classes = np.asarray(classes).astype(str)
    vals, counts = np.unique(y, return_counts=True)
    majority = str(vals[np.argmax(counts)])
    maj_pred = np.full_like(y, majority)
    # the majority baseline's probabilities: label frequencies (gives its top-3 accuracy)
    freq = np.array([np.mean(y == c) for c in classes])
    maj_proba = np.tile(freq, (len(y), 1))
    scores = {}
    for name in SCORES:
        if name == "top3_accuracy" and proba is None:
            continue
        scores[name] = {
            "value": _score(name, y, pred, proba, classes),
            "ci95": bootstrap_ci(y, pred, proba, classes, name, n_boot, seed),
            "majority": _score(name, y, maj_pred, maj_proba, classes),
            "majority_ci95": bootstrap_ci(y, maj_pred, maj_proba, classes, name, n_boot, seed),
            "chance": _chance(name, y, classes),
        }
    if len(classes) == 2 and proba is not None and len(vals) == 2:
        scores["roc_auc"] = roc_auc_summary(y == classes[1], proba[:, 1], n_boot=n_boot, seed=seed)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    _, _, fm, _ = precision_recall_fscore_support(y, maj_pred, labels=classes, zero_division=0)
    per_class = {str(c): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(s[i]), "majority_f1": float(fm[i])}
                 for i, c in enumerate(classes)}
    pc, pcount = np.unique(pred, return_counts=True)
    return {"n": int(len(y)), "classes": [str(c) for c in classes], "majority_class": majority,
            "scores": scores, "per_class": per_class,
            "predicted_class_fractions": {str(c): float(n / len(pred)) for c, n in zip(pc, pcount)}}


def roc_auc_summary(positive: np.ndarray, score: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """ROC AUC of ``score`` for the boolean ``positive`` rows, its bootstrap 95 % CI (resamples with
    one class only are skipped) and the baselines: a constant (majority) or random score has AUC 0.5."""
    from scipy.stats import rankdata

    def auc(pos: np.ndarray, sc: np.ndarray) -> float:  # Mann–Whitney U / (n_pos n_neg), ties count half
        n_pos = int(pos.sum())
        return float((rankdata(sc)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(pos) - n_pos)))

    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if positive.all() or not positive.any():
        raise ValueError("ROC AUC needs rows of both classes")
    rng = np.random.default_rng(seed)
    n = len(positive)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if positive[i].any() and not positive[i].all():
            vals.append(auc(positive[i], score[i]))
    lo, hi = np.percentile(vals, [2.5, 97.5]) if vals else (float("nan"), float("nan"))
    return {"value": auc(positive, score), "ci95": (float(lo), float(hi)),
            "majority": 0.5, "majority_ci95": (0.5, 0.5), "chance": 0.5}


def beats_baseline(summary: dict[str, Any], score: str = "accuracy") -> bool:
    """True when ``score`` is above the majority-class baseline's."""
    s = summary["scores"][score]
    return s["value"] > s["majority"]


def treatment_level(y_true: Sequence, proba: np.ndarray, classes: Sequence, treatments: Sequence
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average well probabilities per treatment → (y_true, y_pred, proba) at treatment level."""
    import pandas as pd

    classes = np.asarray(classes)
    df = pd.DataFrame(proba, columns=range(len(classes)))
    df["_t"] = np.asarray(treatments).astype(str)
    df["_y"] = np.asarray(y_true).astype(str)
    g = df.groupby("_t", sort=True)
    p = g[list(range(len(classes)))].mean().to_numpy()
    y = g["_y"].first().to_numpy()
    return y, classes[np.argmax(p, axis=1)], p
