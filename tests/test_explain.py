"""fusion.explain: TreeSHAP per class, feature groups from CellProfiler names, top features with direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from fusion import explain
from fusion.gbm import GBMClassifier
from conftest import PLANTED, make_profiles


def _fit():
    df = make_profiles(n_per_class=10)
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    X, y = df[feats], df["Metadata_Compound"].to_numpy()
    est = GBMClassifier(n_estimators=60).fit(X, y)
    return df, X, y, est


def test_shap_values_add_up_to_the_margin():
    _, X, _, est = _fit()
    vals, base = explain.shap_values(est.get_booster(), X, len(est.classes_))
    assert vals.shape == (len(X), X.shape[1], len(est.classes_))
    margin = est.get_booster().predict(xgb.DMatrix(X.to_numpy(np.float32)), output_margin=True)
    np.testing.assert_allclose(vals.sum(axis=1) + base, margin, atol=1e-3)


def test_top_features_find_the_planted_feature_with_its_direction():
    df, X, y, est = _fit()
    vals, _ = explain.shap_values(est.get_booster(), X, len(est.classes_))
    control = (df["Metadata_Control"] == "negative").to_numpy()
    top = explain.top_features(vals, X, y, est.classes_, control, k=5)
    for cls, (feature, shift) in PLANTED.items():
        assert top[cls][0]["feature"] == feature, top[cls]
        assert top[cls][0]["direction"] == ("higher" if shift > 0 else "lower")
    # a treated class is compared with the control rows, the control class with every other row
    for cls, rows in top.items():
        ref = control if cls != "DMSO" else (y != "DMSO")
        for r in rows:
            assert r["class_mean"] == pytest.approx(X.loc[y == cls, r["feature"]].mean(), rel=1e-12)
            assert r["reference_mean"] == pytest.approx(X.loc[ref, r["feature"]].mean(), rel=1e-12), (cls, r)
            assert r["direction"] == ("higher" if r["class_mean"] > r["reference_mean"] else "lower")
    # DMSO's top features are the planted ones, seen from the other side: lower where a class was
    # shifted up, higher where one was shifted down
    shifts = dict(PLANTED.values())
    dmso = [r for r in top["DMSO"] if r["feature"] in shifts]
    assert dmso and dmso[0] is top["DMSO"][0], top["DMSO"]
    for r in dmso:
        assert r["direction"] == ("lower" if shifts[r["feature"]] > 0 else "higher"), r


def test_feature_groups_from_cellprofiler_names():
    assert explain.feature_group("Nuclei_AreaShape_Area") == "Nuclei · AreaShape"
    assert explain.feature_group("Cells_Texture_Contrast_Tubulin_3_00_256") == "Cells · Texture · Tubulin"
    assert explain.feature_group("Cells_Intensity_MeanIntensity_Tubulin") == "Cells · Intensity · Tubulin"
    assert explain.feature_group("Metadata_Object_Count") == "Well · Cell count"
    assert explain.feature_group("Embedding_3") == "CNN embedding"
    imp = pd.DataFrame({"a": [1.0, 2.0, 0.5], "b": [0.0, 1.0, 0.5]},
                       index=["Nuclei_AreaShape_Area", "Nuclei_AreaShape_Perimeter", "Cells_Intensity_MeanIntensity_DNA"])
    g = explain.group_attributions(imp)
    assert list(g.index) == ["Nuclei · AreaShape", "Cells · Intensity · DNA"]
    np.testing.assert_allclose(g.loc["Nuclei · AreaShape"], [3.0, 1.0])


def test_stack_weights_are_shares():
    meta = {"inputs": ["gbm:a", "gbm:b", "cnn:a", "cnn:b"], "coef": [[3.0, -1.0, 0.5, 0.5], [-3.0, 1.0, 0, 0]]}
    w = explain.stack_weights(meta)
    assert abs(w["gbm"] - 8 / 9) < 1e-9 and abs(w["cnn"] - 1 / 9) < 1e-9
