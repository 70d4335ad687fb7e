"""``fusion predict MODEL_DIR PROFILES [--crops CROPS]``: per-class probabilities for new wells → ``predictions.parquet``.

The model files are verified against the model folder's manifest (SHA-256) and loaded with
XGBoost's own loader, safetensors and JSON; nothing is unpickled. The output keeps every
``Metadata_*`` column of the input and adds ``Prediction`` and one ``Probability_<class>`` column
per class.

For a model trained with crops (final model ``stack``), ``--crops`` runs the whole chain of
:mod:`fusion.chain` on the new wells: the final CNN embeds the new crops, the per-well mean
embeddings are joined to the profiles for ``gbm_embeddings``, ``gbm`` reads the profiles, the CNN's
soft vote is averaged per well, and the stack combines the three. The base models' probabilities
are kept as ``<BASE>_Probability_<class>`` columns. Without ``--crops`` such a model predicts
from its profile-only XGBoost model (with a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fusion import modelio
from fusion.gbm import GBMClassifier, join_embeddings
from fusion.train import PROBA_PREFIX, read_profiles
from cellfusion_core import io
from cellfusion_core.errors import InputError, ModelFileError
from cellfusion_core.layout import (CNN_DIR, GBM_CONFIG, GBM_EMB_CONFIG, GBM_EMB_FILE, GBM_FILE, MANIFEST,
                                   PREDICTIONS_FILE, STACK_FILE)
from cellfusion_core.names import metadata_columns

log = logging.getLogger(__name__)

__all__ = ["load_gbm", "load_chain", "predict_proba_table", "predict"]


def load_gbm(model_dir: str | Path, name: str = GBM_FILE, config: str = GBM_CONFIG) -> GBMClassifier:
    """A fitted XGBoost classifier of a model folder (verified, loaded without pickle)."""
    manifest = modelio.read_model_manifest(model_dir)
    booster = modelio.load_xgb_booster(model_dir, name, manifest)
    return GBMClassifier.from_booster(booster, modelio.load_json_model(model_dir, config, manifest))


def load_chain(model_dir: str | Path, device: str = "auto") -> dict:
    """The base models of a stacked model folder (``gbm``, ``gbm_embeddings``, ``cnn``) and its ``stack``.

    Every file is checked against the manifest (size, SHA-256) before it is read.
    """
    from fusion.cnn.ensemble import CNNEnsemble
    from fusion.stack import StackedClassifier

    model_dir = Path(model_dir)
    manifest = modelio.read_model_manifest(model_dir)
    bases = list(manifest.get("base_models", ["gbm"]))
    models: dict = {"gbm": load_gbm(model_dir)}
    if "gbm_embeddings" in bases:
        models["gbm_embeddings"] = load_gbm(model_dir, GBM_EMB_FILE, GBM_EMB_CONFIG)
    if "cnn" in bases:
        cnn_files = [n for n in manifest[modelio.MODEL_FILES_KEY] if n.startswith(CNN_DIR + "/")]
        if not cnn_files:
            raise ModelFileError("the manifest lists no CNN files for this stacked model", path=model_dir,
                                 hint="retrain with `fusion train --crops`")
        for name in cnn_files:
            modelio.verify_model_file(model_dir, name, manifest)
        models["cnn"] = CNNEnsemble.load(model_dir / CNN_DIR, device=device)
    models["stack"] = StackedClassifier.from_json(modelio.load_json_model(model_dir, STACK_FILE, manifest))
    models["base_models"] = bases
    return models


def _check_features(profiles: pd.DataFrame, feats: list[str]) -> None:
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


def predict_proba_table(model_dir: str | Path, profiles: pd.DataFrame,
                        embeddings: str | Path | pd.DataFrame | None = None,
                        crops: str | Path | None = None, device: str = "auto") -> pd.DataFrame:
    """Metadata columns of ``profiles`` + ``Prediction`` + ``Probability_<class>`` per class.

    With ``crops`` and a stacked model folder: the whole chain (see the module docstring), plus
    ``<BASE>_Probability_<class>`` of each base model.
    """
    manifest = modelio.read_model_manifest(model_dir)
    stacked = manifest.get("final_model") == "stack"
    if crops is not None and not stacked:
        raise InputError("this model folder was trained without crops; --crops cannot be used with it",
                         path=Path(model_dir), hint="drop --crops, or retrain with `fusion train --crops`")
    model = load_gbm(model_dir)
    if stacked and crops is None:
        log.warning("this model folder's final model is the stack of XGBoost and the CNN; without --crops the "
                    "predictions come from its XGBoost model on the profiles alone (the CNN needs single-cell crops)")
    if embeddings is not None:
        profiles = join_embeddings(profiles, embeddings)
    profiles = profiles.reset_index(drop=True)
    feats = [str(f) for f in model.feature_names_in_]
    _check_features(profiles, feats)
    out = profiles[[c for c in metadata_columns(profiles)]].copy()
    if not (stacked and crops is not None):
        proba, classes = model.predict_proba(profiles[feats].astype(np.float32)), model.classes_
        base_probas: dict[str, np.ndarray] = {}
    else:
        proba, classes, base_probas = _predict_stack(model_dir, profiles, feats, crops, device)
    out["Prediction"] = np.asarray(classes)[np.argmax(proba, axis=1)]
    for j, c in enumerate(classes):
        out[PROBA_PREFIX + str(c)] = proba[:, j]
    for b, p in base_probas.items():
        for j, c in enumerate(classes):
            out[f"{b.upper()}_{PROBA_PREFIX}{c}"] = p[:, j]
    return out


def _predict_stack(model_dir, profiles: pd.DataFrame, feats: list[str], crops, device: str):
    from fusion.chain import match_crops, predict_chain
    from fusion.data import load_crops
    from fusion.oof import align_proba
    from fusion.stack import stack_inputs

    models = load_chain(model_dir, device=device)
    if "gbm_embeddings" in models:
        emb_base = [str(f) for f in models["gbm_embeddings"].feature_names_in_ if not str(f).startswith("Embedding_")]
        _check_features(profiles, emb_base)
    crop_set = load_crops(crops)
    cell_row, keys = match_crops(crop_set.meta, profiles, crop_set.source)
    keep = cell_row >= 0
    raw = predict_chain({b: models[b] for b in models["base_models"]}, profiles,
                        profiles[feats].astype(np.float32), crop_set.images[keep], cell_row[keep], keys)
    stack = models["stack"]
    classes = np.asarray(stack.classes_).astype(str)
    base = {b: align_proba(raw[b], models[b].classes_, classes) for b in models["base_models"]}
    return stack.predict_proba(stack_inputs(base, classes)), classes, base


def predict(model_dir: str | Path, profiles: str | Path, out: str | Path | None = None,
            embeddings: str | Path | None = None, crops: str | Path | None = None, device: str = "auto") -> Path:
    """Write ``predictions.parquet`` (default: beside ``profiles``) with its manifest; returns its path."""
    profiles = Path(profiles)
    table = read_profiles(profiles)
    pred = predict_proba_table(model_dir, table, embeddings, crops=crops, device=device)
    out = Path(out) if out is not None else profiles.parent / "predictions"
    if out.suffix != ".parquet":
        out = out / PREDICTIONS_FILE
    existing = out.parent / MANIFEST
    if existing.is_file() and io.read_manifest(out.parent).get("command") != "fusion predict":
        raise InputError("this folder holds another command's output (its manifest.json would be overwritten)",
                         path=out.parent, hint="write predictions to their own folder with -o")
    io.write_parquet(pred, out)
    inputs = {"profiles": profiles, "model_manifest": Path(model_dir) / MANIFEST}
    if embeddings is not None:
        inputs["embeddings"] = Path(embeddings)
    if crops is not None:
        inputs["crops"] = Path(crops)
    model_name = "stack" if crops is not None else "gbm"
    io.write_manifest(out.parent, command="fusion predict", inputs=inputs,
                      parameters={"model_dir": str(Path(model_dir).resolve()), "model": model_name},
                      outputs={out.name: {"rows": len(pred)}})
    log.info("predictions for %d rows written to %s", len(pred), out)
    return out
