"""Why the model made its calls: SHAP on XGBoost, grouped by CellProfiler feature families.

* :func:`shap_values` — exact TreeSHAP (``shap.TreeExplainer``) per class → array (rows, features, classes).
* :func:`class_importance` — mean |SHAP| per feature and class.
* :func:`group_attributions` — those summed into interpretable groups parsed from the CellProfiler
  names with :func:`cellfusion_core.names.parse_feature` ("Nuclei · AreaShape", "Cells · Texture · Tubulin");
  the CNN ensemble's per-well embeddings (``Embedding_*``) form the group "CNN embedding", and
  :func:`group_share` says how much of each class's attribution a group carries.
* :func:`top_features` — per class the top features, with their direction: is the feature higher
  or lower in that class's wells than in the control wells.
* :func:`stack_weights` — how much the stacked meta-learner leans on each base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cellfusion_core.names import CELL_COUNT, is_metadata, parse_feature

__all__ = ["shap_values", "class_importance", "feature_group", "group_attributions", "group_share", "top_features",
           "stack_weights", "cnn_attention_maps"]


def shap_values(booster, X: pd.DataFrame, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """TreeSHAP values (rows, features, classes) and expected values (classes,) of an XGBoost model.

    Values are in the model's margin (log-odds) space. For a binary model the single output is
    returned as two opposite columns (class 0 = −class 1).
    """
    import shap

    explainer = shap.TreeExplainer(booster)
    vals = np.asarray(explainer.shap_values(X.to_numpy(dtype=np.float32, na_value=np.nan)))
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    if vals.ndim == 2:  # binary: one margin
        vals = np.stack([-vals, vals], axis=-1)
        base = np.array([-base[0], base[0]])
    if vals.shape[-1] != n_classes:
        raise ValueError(f"SHAP returned {vals.shape[-1]} outputs for {n_classes} classes")
    return vals.astype(np.float32), base


def class_importance(values: np.ndarray, features: Sequence[str], classes: Sequence) -> pd.DataFrame:
    """Mean |SHAP| per feature (rows) and class (columns)."""
    return pd.DataFrame(np.abs(values).mean(axis=0), index=list(features), columns=[str(c) for c in classes])


def feature_group(name: str, channels: Sequence[str] | None = None) -> str:
    """Interpretable group of one feature ("Nuclei · AreaShape", "Cells · Texture · Tubulin")."""
    if name == CELL_COUNT:
        return "Well · Cell count"
    if is_metadata(name):
        return "Well · " + name.removeprefix("Metadata_")
    if name.startswith("Embedding_"):
        return "CNN embedding"
    return parse_feature(name, channels).group()


def group_attributions(importance: pd.DataFrame, channels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class importance summed over feature groups; groups sorted by total, largest first."""
    groups = [feature_group(f, channels) for f in importance.index]
    g = importance.groupby(groups).sum()
    return g.loc[g.sum(axis=1).sort_values(ascending=False).index]


def group_share(importance: pd.DataFrame, group: str, channels: Sequence[str] | None = None) -> pd.Series:
    """Share of each class's summed mean |SHAP| that falls on the features of ``group`` (e.g.
    ``"CNN embedding"``), plus ``"all classes"``; 0 when the group has no features."""
    mask = np.array([feature_group(f, channels) == group for f in importance.index])
    total = importance.sum(axis=0)
    part = importance[mask].sum(axis=0)
    share = (part / total.where(total > 0)).fillna(0.0)
    overall = float(part.sum() / total.sum()) if total.sum() > 0 else 0.0
    return pd.concat([share, pd.Series({"all classes": overall})])


def top_features(values: np.ndarray, X: pd.DataFrame, y: Sequence, classes: Sequence,
                 control: Sequence[bool] | None = None, k: int = 10) -> dict[str, list[dict[str, Any]]]:
    """For each class, the ``k`` features with the largest mean |SHAP| for that class's output.

    Each entry: ``feature``, ``group``, ``mean_abs_shap``, ``class_mean`` / ``reference_mean`` (mean
    feature value in the class's rows / in the control rows, or in every other row when no control
    is marked) and ``direction`` ("higher" or "lower" than the reference).
    """
    y = np.asarray(y).astype(str)
    imp = class_importance(values, X.columns, classes)
    ctrl = None if control is None else np.asarray(control, dtype=bool)
    out: dict[str, list[dict[str, Any]]] = {}
    for ci, c in enumerate(imp.columns):
        in_class = y == c
        if ctrl is None or not (ctrl & ~in_class).any() or ctrl[in_class].all():
            ref = ~in_class  # no controls, or this class is the control: compare with every other row
        else:
            ref = ctrl & ~in_class
        rows = []
        for f in imp[c].sort_values(ascending=False).index[:k]:
            col = X[f].to_numpy(dtype=float, na_value=np.nan)
            cm = float(np.nanmean(col[in_class])) if in_class.any() else float("nan")
            rm = float(np.nanmean(col[ref])) if ref.any() else float("nan")
            rows.append({"feature": f, "group": feature_group(f), "mean_abs_shap": float(imp.loc[f, c]),
                         "class_mean": cm, "reference_mean": rm,
                         "direction": "higher" if cm > rm else "lower" if cm < rm else "same"})
        out[c] = rows
    return out


def stack_weights(meta: dict[str, Any]) -> dict[str, float]:
    """Share of the meta-learner's total |coefficient| on each base model's probabilities."""
    coef = np.abs(np.asarray(meta["coef"], dtype=float))
    inputs = meta["inputs"]  # e.g. ["gbm:DMSO", "gbm:Tubulor", "cnn:DMSO", ...]
    totals: dict[str, float] = {}
    for j, name in enumerate(inputs):
        base = name.split(":", 1)[0]
        totals[base] = totals.get(base, 0.0) + float(coef[:, j].sum())
    s = sum(totals.values()) or 1.0
    return {b: v / s for b, v in totals.items()}


def cnn_attention_maps(ensemble, crops: np.ndarray, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CBAM spatial-attention maps of one ensemble member on ``crops`` (N, H, W, C).

    Each CBAM block's spatial attention σ(conv([mean_c, max_c])) is recorded during a forward
    pass, upsampled to the crop size and averaged over the network's stages. Returns
    ``(maps (N, H, W) in [0, 1], predicted class index (N,))``.
    """
    import torch
    import torch.nn.functional as F

    model = ensemble.members_[member]
    pre = ensemble.preprocessor_
    x = pre.resize(pre.transform(crops, resize=False).float())
    maps: list[torch.Tensor] = []
    hooks = [blk.spatial.conv.register_forward_hook(lambda _m, _i, out: maps.append(torch.sigmoid(out.detach())))
             for blk in model.cbam.values()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    h, w = crops.shape[1:3]
    up = [F.interpolate(m.float().cpu(), size=(h, w), mode="bilinear", align_corners=False) for m in maps]
    att = torch.stack(up).mean(0)[:, 0].numpy()
    lo = att.reshape(len(att), -1).min(1)[:, None, None]
    hi = att.reshape(len(att), -1).max(1)[:, None, None]
    return (att - lo) / np.maximum(hi - lo, 1e-9), logits.argmax(1).cpu().numpy()
