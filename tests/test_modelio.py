"""Model files: XGBoost's own format, SHA-256 checked on load, pickles refused, tampering caught."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fusion import modelio
from fusion.gbm import GBMClassifier
from fusion.predict import load_gbm
from cellfusion_core.layout import GBM_FILE
from fusion.train import train
from cellfusion_core.errors import ModelFileError
from conftest import make_profiles


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    train(make_profiles(n_per_class=4), out, gbm_params={"n_estimators": 20}, n_splits=3)
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_saved_in_xgboost_format_and_loads_with_xgboost(model_dir):
    import xgboost as xgb

    manifest = json.loads((model_dir / "manifest.json").read_text())
    entry = manifest["model_files"][GBM_FILE]
    assert entry["format"] == "xgboost-ubj" and len(entry["sha256"]) == 64
    booster = xgb.Booster()
    booster.load_model(str(model_dir / GBM_FILE))  # XGBoost's own loader reads it
    assert booster.num_boosted_rounds() == 20
    # the wrapper loaded via modelio gives the same probabilities as the booster
    est = load_gbm(model_dir)
    X = make_profiles(n_per_class=4)[list(est.feature_names_in_)]
    p = booster.predict(xgb.DMatrix(X.to_numpy(np.float32)))
    np.testing.assert_allclose(est.predict_proba(X), p, rtol=1e-6)


def test_no_pickle_in_model_dir(model_dir):
    for p in model_dir.rglob("*"):
        if p.is_file():
            head = p.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), p
            assert p.suffix not in (".pkl", ".pickle", ".joblib")


def test_truncated_model_file_fails_clearly(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path / "m")
    data = (d / GBM_FILE).read_bytes()
    (d / GBM_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or modified"):
        load_gbm(d)


def test_tampered_model_file_fails_clearly(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path / "m")
    data = bytearray((d / GBM_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / GBM_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_gbm(d)


def test_tampered_json_config_fails(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path / "m")
    cfg = json.loads((d / "gbm.json").read_text())
    cfg["classes"] = cfg["classes"][::-1]
    (d / "gbm.json").write_text(json.dumps(cfg, indent=2) + "\n")
    with pytest.raises(ModelFileError, match="gbm.json"):
        load_gbm(d)


def test_pickle_is_refused(tmp_path):
    path = tmp_path / "model.ubj"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="pickle"):
        modelio.check_not_pickle(path)
    with pytest.raises(ModelFileError, match="refused"):
        modelio.check_not_pickle(tmp_path / "model.pkl", b"{}")


def test_pickle_listed_in_manifest_is_refused(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "gbm.ubj").write_bytes(pickle.dumps(GBMClassifier()))
    entry = modelio.model_file_entry(d / "gbm.ubj", "xgboost-ubj")
    (d / "manifest.json").write_text(json.dumps({"model_files": {"gbm.ubj": entry}}))
    with pytest.raises(ModelFileError, match="pickle"):
        modelio.load_xgb_booster(d, "gbm.ubj")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_gbm(tmp_path / "absent")
    with pytest.raises(ModelFileError, match="no manifest"):
        load_gbm(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ModelFileError, match="lists no model files"):
        load_gbm(tmp_path)


def test_json_model_roundtrip(tmp_path):
    entry = modelio.save_json_model({"coef": [[1.0, 2.0]], "classes": ["a"]}, tmp_path / "stack.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"model_files": {"stack.json": entry}}))
    assert modelio.load_json_model(tmp_path, "stack.json")["classes"] == ["a"]
    with pytest.raises(ModelFileError, match="not listed"):
        modelio.load_json_model(tmp_path, "other.json")
