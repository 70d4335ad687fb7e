"""fusion.gbm: XGBoost behind the scikit-learn API, grouped early stopping, class weights, embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold, cross_val_predict

from conftest import make_profiles
from fusion.gbm import GBMClassifier, join_embeddings
from cellfusion_core.errors import InputError

def _xy(df):
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    return df[feats], df["Metadata_Compound"].to_numpy(), (df["Metadata_Plate"] + "/" + df["Metadata_Well"]).to_numpy()


def test_sklearn_api_and_cross_val_predict():
    df = make_profiles()
    X, y, g = _xy(df)
    est = GBMClassifier(n_estimators=50)
    proba = cross_val_predict(est, X, y, groups=g, cv=GroupKFold(4), method="predict_proba", params={"groups": g})
    assert proba.shape == (len(y), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    classes = np.unique(y)
    acc = np.mean(classes[proba.argmax(axis=1)] == y)
    assert acc > 0.8
    est.fit(X, y)
    assert list(est.classes_) == list(classes)
    assert set(est.predict(X)) <= set(classes)
    assert est.n_features_in_ == X.shape[1]


def test_feature_order_and_missing_columns():
    df = make_profiles()
    X, y, _ = _xy(df)
    est = GBMClassifier(n_estimators=20).fit(X, y)
    shuffled = X[X.columns[::-1]]
    np.testing.assert_allclose(est.predict_proba(shuffled), est.predict_proba(X))
    with pytest.raises(InputError, match="missing"):
        est.predict_proba(X.drop(columns=[X.columns[0]]))


def test_early_stopping_on_grouped_fold_and_refit():
    df = make_profiles(n_per_class=30)
    X, y, g = _xy(df)
    est = GBMClassifier(n_estimators=400, early_stopping_rounds=10, min_validation_rows=10).fit(X, y, groups=g)
    assert est.best_iteration_ is not None
    assert est.n_rounds_ < 400
    assert est.get_booster().num_boosted_rounds() == est.n_rounds_
    # without groups (or too few validation rows) no early stopping: the full number of rounds
    est2 = GBMClassifier(n_estimators=40, early_stopping_rounds=10).fit(X, y)
    assert est2.best_iteration_ is None and est2.get_booster().num_boosted_rounds() == 40


def test_class_weights_change_the_model():
    df = make_profiles()
    df = pd.concat([df[df.Metadata_Compound != "Big"], df[df.Metadata_Compound == "Big"].head(3)])
    X, y, _ = _xy(df)
    a = GBMClassifier(n_estimators=30, class_weight="balanced").fit(X, y).predict_proba(X)
    b = GBMClassifier(n_estimators=30, class_weight=None).fit(X, y).predict_proba(X)
    big = list(np.unique(y)).index("Big")
    assert a[y == "Big", big].mean() > b[y == "Big", big].mean()


def test_one_class_is_an_input_error():
    df = make_profiles()
    X, _, _ = _xy(df)
    with pytest.raises(InputError, match="one class"):
        GBMClassifier().fit(X, np.array(["A"] * len(X)))


def test_join_embeddings(tmp_path):
    df = make_profiles(n_per_class=2)
    emb = df[["Metadata_Plate", "Metadata_Well"]].copy()
    for i in range(3):
        emb[f"Embedding_{i}"] = np.arange(len(emb), dtype=float) + i
    joined = join_embeddings(df, emb)
    assert [c for c in joined.columns if c.startswith("Embedding_")] == ["Embedding_0", "Embedding_1", "Embedding_2"]
    np.testing.assert_array_equal(joined["Embedding_0"], np.arange(len(df)))
    path = tmp_path / "emb.parquet"
    emb.iloc[1:].to_parquet(path)
    with pytest.raises(InputError, match="no embedding"):
        join_embeddings(df, path)
    with pytest.raises(InputError, match="not found"):
        join_embeddings(df, tmp_path / "absent.parquet")
