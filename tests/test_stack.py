"""fusion.stack: the JSON meta-learner, cell→well averaging, and `train` with a CNN on crops."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fusion.stack import StackedClassifier, cell_to_well_proba, meta_out_of_fold_proba, stack_inputs
from cellfusion_core.errors import InputError, ModelFileError
from conftest import make_profiles

CLASSES = np.array(["a", "b", "c"])


def _base_probas(n=90, seed=0):
    """A good base model and a useless one."""
    rng = np.random.default_rng(seed)
    y = CLASSES[rng.integers(0, 3, n)]
    good = np.full((n, 3), 0.1)
    good[np.arange(n), np.searchsorted(CLASSES, y)] = 0.8
    good = np.where(rng.random((n, 1)) < 0.15, rng.dirichlet(np.ones(3), n), good)
    noise = rng.dirichlet(np.ones(3), n)
    return y, {"gbm": good, "cnn": noise}


def test_json_roundtrip_matches_sklearn_and_weights_favour_the_informative_model():
    y, probas = _base_probas()
    X = stack_inputs(probas, CLASSES)
    assert list(X.columns) == ["gbm:a", "gbm:b", "gbm:c", "cnn:a", "cnn:b", "cnn:c"]
    est = StackedClassifier(C=1.0, coupling="full", class_weight=None).fit(X, y)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(np.log(np.clip(X.to_numpy(), 1e-6, 1)), y)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(np.log(np.clip(X.to_numpy(), 1e-6, 1))),
                               atol=1e-8)
    obj = json.loads(json.dumps(est.to_json()))
    back = StackedClassifier.from_json(obj)
    np.testing.assert_allclose(back.predict_proba(X[X.columns[::-1]]), est.predict_proba(X))
    w = est.base_weights()
    assert w["gbm"] > w["cnn"] and abs(sum(w.values()) - 1) < 1e-9
    assert np.mean(est.predict(X) == y) > 0.8


def test_binary_stack():
    rng = np.random.default_rng(1)
    y = np.array(["x", "y"] * 20)
    p = np.where((y == "y")[:, None], [0.2, 0.8], [0.8, 0.2]) + rng.normal(0, 0.05, (40, 2))
    X = stack_inputs({"gbm": np.clip(p, 0.01, 0.99)}, np.array(["x", "y"]))
    est = StackedClassifier(coupling="full", class_weight=None).fit(X, y)
    ref = LogisticRegression(max_iter=2000).fit(np.log(X.to_numpy()), y)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(np.log(X.to_numpy())), atol=1e-8)


def test_shared_stack_is_a_weighted_geometric_mean_with_an_optimal_weight():
    y, probas = _base_probas()
    X = stack_inputs(probas, CLASSES)
    est = StackedClassifier(coupling="shared", class_weight=None).fit(X, y)
    coef = est.coef_
    w_gbm, w_cnn = coef[0, 0], coef[0, 3]
    # block-diagonal: every class has the same weight per base model and none on other classes' columns
    np.testing.assert_allclose(coef[:, :3], w_gbm * np.eye(3))
    np.testing.assert_allclose(coef[:, 3:], w_cnn * np.eye(3))
    np.testing.assert_allclose(est.intercept_, 0)
    assert w_gbm > 1.0 and abs(w_cnn) < 0.5 * w_gbm
    logs = {b: np.log(np.clip(p, 1e-6, 1)) for b, p in probas.items()}
    geo = np.exp(w_gbm * logs["gbm"] + w_cnn * logs["cnn"])
    np.testing.assert_allclose(est.predict_proba(X), geo / geo.sum(1, keepdims=True), atol=1e-10)

    def nll(wg, wc):
        z = wg * logs["gbm"] + wc * logs["cnn"]
        z -= z.max(1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -lp[np.arange(len(y)), np.searchsorted(CLASSES, y)].sum() + (wg ** 2 + wc ** 2) / 2

    best = nll(w_gbm, w_cnn)
    for dg, dc in [(0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)]:
        assert nll(w_gbm + dg, w_cnn + dc) > best  # a minimum of the penalized log-loss
    back = StackedClassifier.from_json(json.loads(json.dumps(est.to_json())))
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X))
    assert back.coupling == "shared"


def test_shared_stack_ignores_the_training_class_mix():
    """A held-out set whose classes are missing from training: the shared stack still calls them from the
    base models, the full model cannot (it only knows the training classes and their priors)."""
    y, probas = _base_probas(n=300, seed=3)
    X = stack_inputs(probas, CLASSES)
    train = y != "c"
    shared = StackedClassifier(coupling="shared").fit(X[train], y[train])
    assert list(shared.classes_) == list(CLASSES)
    test = ~train
    assert np.mean(shared.predict(X[test]) == "c") > 0.7
    full = StackedClassifier(coupling="full").fit(X[train], y[train])
    assert "c" not in set(full.predict(X[test]))
    with pytest.raises(InputError, match="coupling"):
        StackedClassifier(coupling="other").fit(X, y)
    with pytest.raises(InputError, match="no base-model"):
        StackedClassifier().fit(X, np.where(y == "a", "z", y))
    with pytest.raises(InputError, match="class_weight"):
        StackedClassifier(class_weight="inverse").fit(X, y)


def _specialists(n=400, seed=5):
    """Base model 'gbm' knows class a (and is noise otherwise), 'cnn' knows b and c; class a is dominant."""
    rng = np.random.default_rng(seed)
    y = CLASSES[rng.choice(3, n, p=[0.6, 0.2, 0.2])]
    k = np.searchsorted(CLASSES, y)

    def model(knows):
        p = rng.dirichlet(np.ones(3), n)
        hit = np.isin(y, knows) & (rng.random(n) < 0.85)
        sharp = np.full((n, 3), 0.05)
        sharp[np.arange(n), k] = 0.9
        return np.where(hit[:, None], sharp, p)

    return y, {"gbm": model(["a"]), "cnn": model(["b", "c"])}


def test_per_class_stack_trusts_each_base_model_where_it_knows():
    y, probas = _specialists()
    X = stack_inputs(probas, CLASSES)
    est = StackedClassifier().fit(X, y)
    assert est.get_params()["coupling"] == "per_class" and est.class_weight == "balanced"
    W = {b: np.array([est.coef_[k, list(X.columns).index(f"{b}:{c}")] for k, c in enumerate(CLASSES)])
         for b in ("gbm", "cnn")}
    assert W["gbm"][0] > W["cnn"][0]  # class a: the gbm specialist
    assert (W["cnn"][1:] > W["gbm"][1:]).all()  # classes b, c: the cnn specialist
    # no weight on another class's columns (block-diagonal), no intercepts
    for k, c in enumerate(CLASSES):
        for j, name in enumerate(X.columns):
            if not name.endswith(f":{c}"):
                assert est.coef_[k, j] == 0
    np.testing.assert_allclose(est.intercept_, 0)
    y2, probas2 = _specialists(seed=6)  # fresh rows: per-class weights beat one weight per model
    X2 = stack_inputs(probas2, CLASSES)
    shared = StackedClassifier(coupling="shared").fit(X, y)

    def balanced_acc(m):
        pred = m.predict(X2)
        return np.mean([np.mean(pred[y2 == c] == c) for c in CLASSES])

    assert balanced_acc(est) > balanced_acc(shared) + 0.03
    back = StackedClassifier.from_json(json.loads(json.dumps(est.to_json())))
    np.testing.assert_allclose(back.predict_proba(X2), est.predict_proba(X2))
    full = StackedClassifier(coupling="full").fit(X, y)  # balanced rows reach sklearn's class_weight
    ref = LogisticRegression(max_iter=2000, class_weight="balanced").fit(np.log(np.clip(X.to_numpy(), 1e-6, 1)), y)
    np.testing.assert_allclose(full.predict_proba(X2), ref.predict_proba(np.log(np.clip(X2.to_numpy(), 1e-6, 1))),
                               atol=1e-8)

    # the fit is a minimum of the class-balanced, penalized log-loss
    logs = {b: np.log(np.clip(p, 1e-6, 1)) for b, p in probas.items()}
    onehot = (y[:, None] == CLASSES[None, :]).astype(float)
    onehot *= len(y) / (3 * onehot.sum(0))

    def loss(Wg, Wc):
        z = Wg * logs["gbm"] + Wc * logs["cnn"]
        z -= z.max(1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        pen = sum(((w - w.mean()) ** 2).sum() + w.mean() ** 2 for w in (Wg, Wc))
        return -(onehot * lp).sum() + pen / 2

    best = loss(W["gbm"], W["cnn"])
    for k in range(3):
        for d in (0.05, -0.05):
            e = np.zeros(3)
            e[k] = d
            assert loss(W["gbm"] + e, W["cnn"]) > best and loss(W["gbm"], W["cnn"] + e) > best


def test_malformed_stack_json_is_refused():
    y, probas = _base_probas()
    obj = StackedClassifier().fit(stack_inputs(probas, CLASSES), y).to_json()
    with pytest.raises(ModelFileError, match="format"):
        StackedClassifier.from_json({**obj, "format": "other"})
    with pytest.raises(ModelFileError, match="inconsistent"):
        StackedClassifier.from_json({**obj, "coef": obj["coef"][:2]})


def test_meta_out_of_fold_never_sees_its_test_rows():
    y, probas = _base_probas()
    X = stack_inputs(probas, CLASSES)
    splits = [(np.arange(45, 90), np.arange(45)), (np.arange(45), np.arange(45, 90))]
    p = meta_out_of_fold_proba(X, y, CLASSES, splits)
    first = StackedClassifier().fit(X.iloc[45:], y[45:]).predict_proba(X.iloc[:45])
    np.testing.assert_allclose(p[:45], first)


def test_cell_to_well_proba_averages_and_orders():
    cells = pd.DataFrame({"Metadata_Well": ["B02", "B02", "A01", "C03"]})
    proba = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.9, 0.1]])
    wells = pd.DataFrame({"Metadata_Well": ["A01", "B02", "C03"]})
    np.testing.assert_allclose(cell_to_well_proba(proba, cells, wells), [[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    with pytest.raises(InputError, match="no cell crops"):
        cell_to_well_proba(proba, cells, pd.DataFrame({"Metadata_Well": ["A01", "D04"]}))


def _write_crops(profiles: pd.DataFrame, out, per_well=6, size=24, seed=0):
    """Crops whose channel brightness carries the class (so a CNN can learn it in one epoch)."""
    import tifffile

    rng = np.random.default_rng(seed)
    level = {c: i for i, c in enumerate(sorted(profiles["Metadata_Compound"].unique()))}
    imgs, rows = [], []
    for _, r in profiles.iterrows():
        for k in range(per_well):
            img = rng.normal(500, 50, (size, size, 3))
            img[..., level[r["Metadata_Compound"]] % 3] += 2000 * (1 + level[r["Metadata_Compound"]] // 3)
            imgs.append(np.clip(img, 0, 65535).astype(np.uint16))
            rows.append({"Metadata_Plate": r["Metadata_Plate"], "Metadata_Well": r["Metadata_Well"],
                         "Metadata_Site": 1, "Metadata_ObjectNumber": k + 1})
    out.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out / "crops.tif", np.stack(imgs))
    pd.DataFrame(rows).to_parquet(out / "crops.parquet")
    return out


def test_train_with_crops_stacks_gbm_and_cnn(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from fusion.modelio import verify_model_dir
    from fusion.train import train

    profiles = make_profiles(n_per_class=3)
    crops = _write_crops(profiles, tmp_path / "crops", per_well=4)
    out = train(profiles, tmp_path / "model", crops=crops, n_splits=2, gbm_params={"n_estimators": 20},
                cnn_params={"image_size": 24, "epochs": 1, "batch_size": 32, "balance": "none",
                            "val_fraction": 0.0, "device": "cpu"})
    manifest = verify_model_dir(out)
    assert manifest["final_model"] == "stack" and manifest["base_models"] == ["gbm", "gbm_embeddings", "cnn"]
    assert "stack.json" in manifest["model_files"]
    assert (out / "cnn_attention.parquet").is_file()
    from fusion.report import report

    html = report(out).read_text()
    assert "Where the CNN looked" in html and "Base models vs the stack" in html
    assert any(k.startswith("cnn/") and k.endswith(".safetensors") for k in manifest["model_files"])
    assert set(manifest["stack_weights"]) == {"gbm", "gbm_embeddings", "cnn"}
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    assert {"GBM_Probability_DMSO", "GBM_EMBEDDINGS_Probability_DMSO", "CNN_Probability_DMSO",
            "Probability_DMSO"} <= set(oof.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["base_models"]) == {"gbm", "gbm_embeddings", "cnn"}
    # --no-cnn: the profile path only
    out2 = train(profiles, tmp_path / "model2", crops=crops, cnn=False, n_splits=2, gbm_params={"n_estimators": 10})
    assert json.loads((out2 / "manifest.json").read_text())["final_model"] == "gbm"
    assert json.loads((out / "manifest.json").read_text())["parameters"]["stack_coupling"] == "per_class"


def test_unknown_stack_coupling_fails_before_training(tmp_path):
    from fusion.train import train
    from cellfusion_core.errors import ConfigError

    with pytest.raises(ConfigError, match="stack coupling"):
        train(make_profiles(n_per_class=3), tmp_path / "model", stack_coupling="geometric")
    assert not (tmp_path / "model").exists()
