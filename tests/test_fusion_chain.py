"""fusion.chain: per-fold CNN → per-well embeddings ⊕ profiles → XGBoost, the soft vote, their stack;
`fusion train --crops` / `fusion predict --crops` / the report on a small synthetic plate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fusion.chain import chain_out_of_fold, fit_chain, match_crops, predict_chain, well_soft_vote, with_embeddings
from fusion.gbm import GBMClassifier
from cellfusion_core.errors import ConfigError, InputError


class RecordingCNN:
    """A stand-in for CNNEnsemble: 'crops' are (N, 1, 1, 2) arrays of (crop id, signal); it records which
    crops it was trained on, predicts from the signal and embeds (signal, trained-on flag)."""

    fits: list[set[int]] = []

    def fit(self, X, y, groups=None):
        self.seen_ = {int(v) for v in X[:, 0, 0, 0]}
        RecordingCNN.fits.append(self.seen_)
        self.classes_ = np.unique(y)
        means = {c: X[np.asarray(y) == c, 0, 0, 1].mean() for c in self.classes_}
        self.centres_ = np.array([means[c] for c in self.classes_])
        return self

    def predict_proba(self, X):
        d = -np.abs(X[:, 0, 0, 1][:, None] - self.centres_[None, :])
        e = np.exp(d - d.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def embed(self, X):
        seen = np.array([int(v) in self.seen_ for v in X[:, 0, 0, 0]], float)
        return np.stack([X[:, 0, 0, 1], seen], axis=1)


def _table(n_per_class=6, cells=3, seed=0):
    rng = np.random.default_rng(seed)
    rows, crops, cell_row = [], [], []
    for i in range(3 * n_per_class):
        c = "abc"[i % 3]
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"W{i:02d}", "Metadata_Compound": c,
                     "noise": rng.normal()})
        for _ in range(cells):
            crops.append([len(crops), "abc".index(c) + rng.normal(0, 0.2)])
            cell_row.append(i)
    images = np.asarray(crops, np.float32)[:, None, None, :]
    return pd.DataFrame(rows), images, np.asarray(cell_row)


def test_each_fold_cnn_trains_on_its_training_wells_only_and_embeds_the_test_wells_unseen():
    profiles, images, cell_row = _table()
    X = profiles[["noise"]].astype(np.float32)
    y = profiles["Metadata_Compound"].to_numpy()
    groups = profiles["Metadata_Well"].to_numpy()
    splits = [(np.arange(9, 18), np.arange(9)), (np.arange(9), np.arange(9, 18))]
    RecordingCNN.fits = []
    seen_test_flags = []

    class Gbm(GBMClassifier):
        def fit(self, X, y, groups=None):  # the training rows' embeddings come from cells the CNN saw
            seen_test_flags.append(X["Embedding_1"].to_numpy())
            return super().fit(X, y, groups=groups)

        def predict_proba(self, X):
            seen_test_flags.append(X["Embedding_1"].to_numpy())
            return super().predict_proba(X)

    out = chain_out_of_fold(RecordingCNN, lambda: Gbm(n_estimators=20), profiles, X, y, groups, np.array(list("abc")),
                            splits, images, cell_row, ["Metadata_Plate", "Metadata_Well"])
    for (tr, te), seen in zip(splits, RecordingCNN.fits):
        assert seen == set(np.flatnonzero(np.isin(cell_row, tr)).tolist())
    # fold 1: training rows' embeddings from seen cells (flag 1), test rows' from unseen cells (flag 0)
    assert (seen_test_flags[0] == 1).all() and (seen_test_flags[1] == 0).all()
    assert set(out) == {"gbm_embeddings", "cnn"}
    for p in out.values():
        np.testing.assert_allclose(p.sum(1), 1)
    assert np.mean(np.array(list("abc"))[out["cnn"].argmax(1)] == y) > 0.9
    assert np.mean(np.array(list("abc"))[out["gbm_embeddings"].argmax(1)] == y) > 0.8

    chain = fit_chain(RecordingCNN, lambda: GBMClassifier(n_estimators=20), profiles, X, y, groups, images, cell_row,
                      ["Metadata_Plate", "Metadata_Well"])
    assert list(chain.X_embeddings.columns) == ["noise", "Embedding_0", "Embedding_1"]
    got = predict_chain({"gbm": GBMClassifier(n_estimators=5).fit(X, y), "cnn": chain.cnn,
                         "gbm_embeddings": chain.gbm_embeddings}, profiles, X, images, cell_row,
                        ["Metadata_Plate", "Metadata_Well"])
    np.testing.assert_allclose(got["gbm_embeddings"], chain.gbm_embeddings.predict_proba(chain.X_embeddings))
    np.testing.assert_allclose(got["cnn"], well_soft_vote(chain.cnn.predict_proba(images), cell_row,
                                                          np.arange(len(profiles))))


def test_a_class_missing_from_a_training_fold_gives_renormalised_rows():
    profiles, images, cell_row = _table()
    y = profiles["Metadata_Compound"].to_numpy()
    X = profiles[["noise"]].astype(np.float32)
    te = np.flatnonzero(y == "c")
    splits = [(np.setdiff1d(np.arange(len(y)), te), te), (te, np.setdiff1d(np.arange(len(y)), te))]
    out = chain_out_of_fold(RecordingCNN, lambda: GBMClassifier(n_estimators=5), profiles, X, y,
                            profiles["Metadata_Well"].to_numpy(), np.array(list("abc")), splits, images, cell_row,
                            ["Metadata_Plate", "Metadata_Well"])
    for p in out.values():
        np.testing.assert_allclose(p.sum(1), 1)
        assert (p[te, 2] == 0).all()  # class c was never trained on in its test fold


def test_crops_are_matched_up_front():
    profiles, _, _ = _table(n_per_class=2, cells=1)
    crop_meta = pd.DataFrame({"Metadata_Plate": ["P1"] * 3 + ["P9"], "Metadata_Well": ["W00", "W01", "W00", "W00"]})
    with pytest.raises(InputError, match="4 profiled well\\(s\\) have no crops: P1/W02"):
        match_crops(crop_meta, profiles)
    full = pd.DataFrame({"Metadata_Plate": ["P1"] * 6 + ["P9"], "Metadata_Well": [f"W{i:02d}" for i in range(6)] + ["W00"]})
    rows, keys = match_crops(full, profiles)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, -1] and keys == ["Metadata_Plate", "Metadata_Well"]
    with pytest.raises(InputError, match="Metadata_Well"):
        match_crops(pd.DataFrame({"Metadata_Plate": ["P1"]}), profiles)
    X = pd.DataFrame({"Embedding_0": np.zeros(6)})
    with pytest.raises(InputError, match="already hold embedding"):
        with_embeddings(profiles, X, pd.DataFrame(), ["Metadata_Well"])
    np.testing.assert_allclose(well_soft_vote(np.array([[1.0, 0], [0, 1], [1, 0]]), np.array([1, 1, 0]),
                                              np.array([0, 1])), [[1, 0], [0.5, 0.5]])


def test_extract_crops_train_report_predict_the_four_models(small_plate, tmp_path):
    """The example plate: `profiler extract --crops` → `fusion train --crops` (four models) → report → predict."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    import torch
    from typer.testing import CliRunner

    from fusion.cli import app as fusion_app
    from fusion.modelio import verify_model_dir
    from fusion.predict import load_gbm
    from profiler.cli import app as profiler_app

    torch.set_num_threads(1)
    ext, model = tmp_path / "extract", tmp_path / "model"
    res = CliRunner().invoke(profiler_app, ["extract", str(small_plate), "-o", str(ext), "--workers", "0",
                                            "--no-progress", "--crops", "--crop-size", "32"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(fusion_app, ["train", str(ext / "profiles.parquet"), "-o", str(model), "--crops", str(ext),
                                          "--cnn-config", "tiny", "--folds", "2", "--label", "Metadata_Compound",
                                          "--group-by", "Metadata_Well"])
    assert res.exit_code == 0, res.output
    manifest = verify_model_dir(model)
    assert manifest["base_models"] == ["gbm", "gbm_embeddings", "cnn"] and manifest["final_model"] == "stack"
    assert {"gbm.ubj", "gbm.json", "gbm_embeddings.ubj", "gbm_embeddings.json", "stack.json"} <= set(manifest["model_files"])
    assert any(k.startswith("cnn/") and k.endswith(".safetensors") for k in manifest["model_files"])
    assert not any(p.suffix in (".pkl", ".pt", ".joblib") for p in model.rglob("*"))
    assert manifest["explained_model"] == "gbm_embeddings"
    assert any(f.startswith("Embedding_") for f in manifest["features"])
    assert not any(f.startswith("Embedding_") for f in manifest["profile_features"])
    classes = manifest["classes"]
    oof = pd.read_parquet(model / "oof_predictions.parquet")
    for prefix in ("", "GBM_", "GBM_EMBEDDINGS_", "CNN_"):
        p = oof[[f"{prefix}Probability_{c}" for c in classes]].to_numpy()
        np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics["base_models"]) == {"gbm", "gbm_embeddings", "cnn"}
    explained = json.loads((model / "explain.json").read_text())
    assert "CNN embedding" in explained["group_attributions"]

    res = CliRunner().invoke(fusion_app, ["report", str(model)])
    assert res.exit_code == 0, res.output
    html = (model / "report.html").read_text()
    for text in ("Base models vs the stack", "XGBoost on profiles + CNN embeddings (gbm_embeddings)",
                 "CNN soft vote (cnn)", "stack (final)", "majority class", "Plate view",
                 "How much of a call the image embedding carries"):
        assert text in html, text
    plates = sorted((model / "figures").glob("plate_*.png"))
    assert len(plates) == 1 and plates[0].stat().st_size > 5000
    assert (model / "figures" / "model_comparison.png").is_file()

    res = CliRunner().invoke(fusion_app, ["predict", str(model), str(ext / "profiles.parquet"), "-o",
                                          str(tmp_path / "pred"), "--crops", str(ext), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    pred = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert len(pred) == len(oof)
    for prefix in ("", "GBM_", "GBM_EMBEDDINGS_", "CNN_"):
        np.testing.assert_allclose(pred[[f"{prefix}Probability_{c}" for c in classes]].sum(axis=1), 1, atol=1e-6)
    # the chain at prediction time rebuilds the training embeddings: gbm_embeddings agrees with itself
    train_rows = pd.read_parquet(model / "training_profiles.parquet")
    gbm_e = load_gbm(model, "gbm_embeddings.ubj", "gbm_embeddings.json")
    ref = gbm_e.predict_proba(train_rows[list(gbm_e.feature_names_in_)])
    np.testing.assert_allclose(pred[[f"GBM_EMBEDDINGS_Probability_{c}" for c in classes]].to_numpy(), ref, atol=1e-4)
    # the stack's output is what the stored meta-learner makes of the three base models
    from fusion.stack import StackedClassifier, stack_inputs

    stack = StackedClassifier.from_json(json.loads((model / "stack.json").read_text()))
    base = {b: pred[[f"{b.upper()}_Probability_{c}" for c in classes]].to_numpy() for b in manifest["base_models"]}
    np.testing.assert_allclose(pred[[f"Probability_{c}" for c in classes]].to_numpy(),
                               stack.predict_proba(stack_inputs(base, classes)), atol=1e-9)

    # --crops with --embeddings, and crops that do not exist, are clear errors before any training
    res = CliRunner().invoke(fusion_app, ["train", str(ext / "profiles.parquet"), "-o", str(tmp_path / "m2"),
                                          "--crops", str(ext), "--embeddings", str(ext / "profiles.parquet")])
    assert isinstance(res.exception, ConfigError) and "cannot be combined" in str(res.exception)
    from fusion.train import train

    with pytest.raises(InputError, match="crops not found"):
        train(ext / "profiles.parquet", tmp_path / "m3", crops=tmp_path / "nowhere")
    assert not (tmp_path / "m3").exists()
