"""``fusion predict MODEL_DIR PROFILES``: per-class probabilities for new wells → ``predictions.parquet``.

The model files are verified against the model folder's manifest (SHA-256) and loaded with
XGBoost's own loader; nothing is unpickled. The output keeps every ``Metadata_*`` column of the
input and adds ``Prediction`` and one ``Probability_<class>`` column per class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fusion import modelio
from fusion.gbm import GBMClassifier, join_embeddings
from fusion.train import GBM_CONFIG, GBM_FILE, PROBA_PREFIX, read_profiles
from profiler import io
from profiler.errors import InputError
from profiler.names import metadata_columns

log = logging.getLogger(__name__)

__all__ = ["load_gbm", "predict_proba_table", "predict"]


def load_gbm(model_dir: str | Path) -> GBMClassifier:
    """The fitted XGBoost classifier of a model folder (verified, loaded without pickle)."""
    manifest = modelio.read_model_manifest(model_dir)
    booster = modelio.load_xgb_booster(model_dir, GBM_FILE, manifest)
    config = modelio.load_json_model(model_dir, GBM_CONFIG, manifest)
    return GBMClassifier.from_booster(booster, config)


def predict_proba_table(model_dir: str | Path, profiles: pd.DataFrame,
                        embeddings: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """Metadata columns of ``profiles`` + ``Prediction`` + ``Probability_<class>`` per class."""
    model = load_gbm(model_dir)
    if modelio.read_model_manifest(model_dir).get("final_model") == "stack":
        log.warning("this model folder's final model is the XGBoost + CNN stack; predictions from profiles "
                    "alone come from its XGBoost model (the CNN needs single-cell crops)")
    if embeddings is not None:
        profiles = join_embeddings(profiles, embeddings)
    feats = list(model.feature_names_in_)
    missing = [f for f in feats if f not in profiles.columns]
    if missing:
        raise InputError(f"{len(missing)} feature column(s) the model needs are missing from the profiles: "
                         f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}",
                         hint="measure the plate with the same pipeline (and feature selection) as the training "
                              "profiles; `fusion predict` cannot invent features"
                              + ("; pass --embeddings" if any(f.startswith("Embedding_") for f in missing) else ""))
    bad = [f for f in feats if not pd.api.types.is_numeric_dtype(profiles[f])]
    if bad:
        raise InputError(f"feature column(s) are not numeric: {', '.join(bad[:5])}")
    proba = model.predict_proba(profiles[feats].astype(np.float32))
    out = profiles[[c for c in metadata_columns(profiles)]].copy().reset_index(drop=True)
    out["Prediction"] = model.classes_[np.argmax(proba, axis=1)]
    for j, c in enumerate(model.classes_):
        out[PROBA_PREFIX + str(c)] = proba[:, j]
    return out


def predict(model_dir: str | Path, profiles: str | Path, out: str | Path | None = None,
            embeddings: str | Path | None = None) -> Path:
    """Write ``predictions.parquet`` (default: beside ``profiles``) with its manifest; returns its path."""
    profiles = Path(profiles)
    table = read_profiles(profiles)
    pred = predict_proba_table(model_dir, table, embeddings)
    out = Path(out) if out is not None else profiles.parent / "predictions"
    if out.suffix != ".parquet":
        out = out / "predictions.parquet"
    existing = out.parent / io.MANIFEST
    if existing.is_file() and io.read_manifest(out.parent).get("command") != "fusion predict":
        raise InputError("this folder holds another command's output (its manifest.json would be overwritten)",
                         path=out.parent, hint="write predictions to their own folder with -o")
    io.write_parquet(pred, out)
    inputs = {"profiles": profiles, "model_manifest": Path(model_dir) / io.MANIFEST}
    if embeddings is not None:
        inputs["embeddings"] = Path(embeddings)
    io.write_manifest(out.parent, command="fusion predict", inputs=inputs,
                      parameters={"model_dir": str(Path(model_dir).resolve()), "model": "gbm"},
                      outputs={out.name: {"rows": len(pred)}})
    log.info("predictions for %d rows written to %s", len(pred), out)
    return out
