"""``fusion train``: profiles (+ CNN embeddings, + crops) → cross-validated models in a model folder.

What a model folder holds (all written atomically; nothing is a pickle):

* ``gbm.ubj`` — the XGBoost model fit on every row, in XGBoost's own UBJ format; ``gbm.json`` — what
  is needed to wrap it again (classes, feature order, parameters).
* ``stack.json`` — the logistic-regression meta-learner (only when a CNN was stacked).
* ``oof_predictions.parquet`` — out-of-fold probabilities of every row (``Probability_<class>``),
  its ``Label``, ``Prediction`` and ``Fold``: the honest numbers the report shows.
* ``training_profiles.parquet`` — the rows and features the model was fit on (for SHAP plots).
* ``shap_values.parquet`` — TreeSHAP of the final model on those rows (one row per row × class).
* ``metrics.json``, ``explain.json`` — metrics with baselines and CIs; top features and groups.
* ``manifest.json`` — inputs with SHA-256, parameters, versions, classes, features, row counts and
  ``model_files`` (format, size, SHA-256 of each model file, checked on load).

Cross-validation is grouped: by default a group is a well (``Metadata_Plate`` + ``Metadata_Well``),
so no well is in a training and a test fold at once; ``group_by="Metadata_Compound"`` leaves whole
compounds out (the honest test for a mechanism-of-action label).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from fusion import explain, metrics, modelio
from fusion.gbm import GBMClassifier, join_embeddings
from profiler import io
from profiler.errors import ConfigError, InputError
from profiler.names import CELL_COUNT, COMPOUND, CONTROL, PLATE, WELL, feature_columns, metadata_columns

log = logging.getLogger(__name__)

__all__ = ["train", "read_profiles", "model_features", "make_groups", "cv_splits", "out_of_fold_proba",
           "GBM_FILE", "GBM_CONFIG", "STACK_FILE", "OOF_FILE", "TRAIN_FILE", "SHAP_FILE"]

GBM_FILE = "gbm.ubj"
GBM_CONFIG = "gbm.json"
STACK_FILE = "stack.json"
OOF_FILE = "oof_predictions.parquet"
TRAIN_FILE = "training_profiles.parquet"
SHAP_FILE = "shap_values.parquet"
PROBA_PREFIX = "Probability_"


def read_profiles(path: str | Path) -> pd.DataFrame:
    """Read a profile table (Parquet or CSV[.gz]) with a clear error when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError("profile table not found", path=path,
                         hint="give profiles.parquet written by `profiler extract` (or any pycytominer table)")
    try:
        if path.suffix in (".csv", ".gz", ".tsv"):
            return pd.read_csv(path, sep="\t" if ".tsv" in path.name else ",")
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"cannot read the profile table ({type(exc).__name__}: {exc})", path=path,
                         hint="give a Parquet or CSV table with Metadata_* columns and feature columns") from exc


def model_features(profiles: pd.DataFrame, include_cell_count: bool = True) -> list[str]:
    """Feature columns a model uses: every non-metadata numeric column (+ the cell count)."""
    feats = feature_columns(profiles)
    bad = [c for c in feats if not pd.api.types.is_numeric_dtype(profiles[c])]
    if bad:
        raise InputError(f"feature column(s) are not numeric: {', '.join(bad[:5])}",
                         hint="prefix metadata columns with Metadata_ so they are not taken for features")
    if include_cell_count and CELL_COUNT in profiles.columns:
        feats = feats + [CELL_COUNT]
    if not feats:
        raise InputError("the profile table has no feature columns",
                         hint="features are the columns whose names do not start with Metadata_")
    return feats


def make_groups(profiles: pd.DataFrame, group_by: str | Sequence[str] | None = None) -> np.ndarray:
    """Group label of every row: plate + well by default, or the given column(s)."""
    cols = [group_by] if isinstance(group_by, str) else list(group_by or [c for c in (PLATE, WELL)
                                                                            if c in profiles.columns])
    missing = [c for c in cols if c not in profiles.columns]
    if missing or not cols:
        raise InputError(f"cannot group rows: column(s) {', '.join(missing) or 'Metadata_Plate/Metadata_Well'} "
                         "missing from the profile table",
                         hint="pass --group-by with a column that exists (e.g. Metadata_Compound)")
    return profiles[cols].astype(str).agg("/".join, axis=1).to_numpy()


def cv_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped folds (stratified when each class spans enough groups); no group in train and test."""
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise InputError(f"cross-validation needs at least 2 groups, found {n_groups}",
                         hint="give more wells, or group by a column with more values")
    per_class_groups = pd.Series(groups).groupby(y).nunique()
    if per_class_groups.min() >= k:
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        cv = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]


def out_of_fold_proba(make_estimator, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, classes: np.ndarray,
                      splits: Sequence[tuple[np.ndarray, np.ndarray]], progress=None) -> np.ndarray:
    """Out-of-fold class probabilities (columns = ``classes``) of a fresh estimator per fold.

    A class absent from a training fold gets probability 0 in that fold's test rows.
    """
    proba = np.zeros((len(y), len(classes)))
    col = {c: i for i, c in enumerate(classes)}
    for tr, te in splits:
        est = make_estimator()
        est.fit(X.iloc[tr], y[tr], groups=groups[tr])
        p = est.predict_proba(X.iloc[te])
        for j, c in enumerate(est.classes_):
            proba[te, col[c]] = p[:, j]
        if progress is not None:
            progress()
    return proba


def _manifest_inputs(profiles_path: Path | None, embeddings: Any) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    if profiles_path is not None:
        inputs["profiles"] = profiles_path
    if isinstance(embeddings, (str, Path)):
        inputs["embeddings"] = Path(embeddings)
    return inputs


def train(profiles: str | Path | pd.DataFrame, out_dir: str | Path, *, label: str = COMPOUND,
          group_by: str | Sequence[str] | None = None, embeddings: str | Path | pd.DataFrame | None = None,
          n_splits: int = 5, seed: int = 0, include_cell_count: bool = True,
          gbm_params: Mapping[str, Any] | None = None, n_jobs: int = 2) -> Path:
    """Train and cross-validate XGBoost on a profile table; write the model folder ``out_dir``.

    Parameters
    ----------
    profiles:
        ``profiles.parquet`` (or CSV, or a DataFrame): one row per well, ``Metadata_*`` + features.
    label:
        The column to predict (``Metadata_Compound``, ``Metadata_MoA`` …).
    group_by:
        Column(s) whose values are never split between training and test folds. Default: plate + well.
    embeddings:
        Optional per-well CNN embeddings (``fusion embed``) appended to the features.
    n_splits:
        Number of cross-validation folds (fewer when there are fewer groups).
    include_cell_count:
        Use ``Metadata_Object_Count`` (cells per well) as a feature.
    gbm_params:
        Overrides of :class:`fusion.gbm.GBMClassifier` parameters.
    """
    from rich.progress import Progress

    out_dir = Path(out_dir)
    profiles_path = None
    if not isinstance(profiles, pd.DataFrame):
        profiles_path = Path(profiles)
        profiles = read_profiles(profiles_path)
    if label not in profiles.columns:
        raise InputError(f"label column {label!r} is not in the profile table", path=profiles_path,
                         hint=f"choose one of: {', '.join(metadata_columns(profiles)) or '(no Metadata_ columns)'}")
    keep = profiles[label].notna()
    if (~keep).any():
        log.warning("%d row(s) without a %s label skipped", int((~keep).sum()), label)
    profiles = profiles.loc[keep].reset_index(drop=True)
    if embeddings is not None:
        profiles = join_embeddings(profiles, embeddings)
    feats = model_features(profiles, include_cell_count)
    X = profiles[feats].astype(np.float32)
    y = profiles[label].astype(str).to_numpy()
    classes = np.unique(y)
    if len(classes) < 2:
        raise InputError(f"the label {label!r} has only one value ({classes[0] if len(classes) else 'none'})",
                         path=profiles_path, hint="a classifier needs at least two classes")
    groups = make_groups(profiles, group_by)
    params = {**(gbm_params or {})}
    try:
        GBMClassifier(**params)
    except TypeError as exc:
        raise ConfigError(f"unknown XGBoost parameter ({exc})") from exc
    params.setdefault("n_jobs", n_jobs)
    params.setdefault("random_state", seed)

    splits = cv_splits(y, groups, n_splits, seed)
    fold = np.empty(len(y), dtype=np.int64)
    for i, (_, te) in enumerate(splits):
        fold[te] = i
    with Progress(transient=True) as bar:
        task = bar.add_task("cross-validating XGBoost", total=len(splits) + 1)
        oof = out_of_fold_proba(lambda: GBMClassifier(**params), X, y, groups, classes, splits,
                                progress=lambda: bar.advance(task))
        final = GBMClassifier(**params).fit(X, y, groups=groups)
        bar.advance(task)
    pred = classes[np.argmax(oof, axis=1)]
    summary = metrics.classification_summary(y, pred, oof, classes, seed=seed)

    # explanations of the final model on the training rows
    values, base = explain.shap_values(final.get_booster(), X, len(classes))
    control = None
    if CONTROL in profiles.columns:
        control = (profiles[CONTROL].astype(str) == "negative").to_numpy()
    top = explain.top_features(values, X, y, classes, control, k=10)
    imp = explain.class_importance(values, feats, classes)
    groups_imp = explain.group_attributions(imp)

    meta_cols = metadata_columns(profiles)
    oof_df = profiles[meta_cols].copy()
    oof_df["Label"] = y
    oof_df["Prediction"] = pred
    oof_df["Fold"] = fold
    for j, c in enumerate(classes):
        oof_df[PROBA_PREFIX + c] = oof[:, j]
    shap_df = pd.DataFrame(values.transpose(2, 0, 1).reshape(-1, len(feats)), columns=feats)
    shap_df.insert(0, "Row", np.tile(np.arange(len(y)), len(classes)))
    shap_df.insert(0, "Class", np.repeat(classes, len(y)))

    out_dir.mkdir(parents=True, exist_ok=True)
    model_files = {
        GBM_FILE: modelio.save_xgb(final, out_dir / GBM_FILE),
        GBM_CONFIG: modelio.save_json_model(final.to_config(), out_dir / GBM_CONFIG, "gbm-config-json"),
    }
    io.write_parquet(oof_df, out_dir / OOF_FILE)
    io.write_parquet(pd.concat([profiles[[c for c in meta_cols if c not in feats]], X], axis=1),
                     out_dir / TRAIN_FILE)
    io.write_parquet(shap_df, out_dir / SHAP_FILE)
    io.write_json(summary, out_dir / "metrics.json")
    io.write_json({"label": label, "classes": list(classes), "expected_value": base.tolist(),
                   "top_features": top,
                   "class_importance": {c: imp[c].sort_values(ascending=False).to_dict() for c in imp.columns},
                   "group_attributions": {g: row.to_dict() for g, row in groups_imp.iterrows()}},
                  out_dir / "explain.json")
    modelio_params = {"label": label, "group_by": group_by or [PLATE, WELL], "n_splits": len(splits),
                      "seed": seed, "include_cell_count": include_cell_count, "gbm": final.get_params(),
                      "gbm_rounds": final.n_rounds_, "cnn": False}
    io.write_manifest(
        out_dir, command="fusion train", inputs=_manifest_inputs(profiles_path, embeddings),
        parameters=modelio_params,
        outputs={OOF_FILE: {"rows": len(oof_df)}, TRAIN_FILE: {"rows": len(X), "features": len(feats)},
                 SHAP_FILE: {"rows": len(shap_df)}},
        extra={modelio.MODEL_FILES_KEY: model_files, "classes": list(classes), "features": feats,
               "rows": {"total": int(len(y)), "groups": int(len(np.unique(groups))),
                        "per_class": {c: int(n) for c, n in zip(*np.unique(y, return_counts=True))}},
               "base_models": ["gbm"], "final_model": "gbm",
               "cv_summary": {k: v["value"] for k, v in summary["scores"].items()}},
    )
    acc = summary["scores"]["accuracy"]
    log.info("out-of-fold accuracy %.3f (majority baseline %.3f) on %d rows, %d classes",
             acc["value"], acc["majority"], len(y), len(classes))
    return out_dir
