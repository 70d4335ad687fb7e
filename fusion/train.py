"""``fusion train``: profiles (+ CNN embeddings, + crops) → cross-validated models in a model folder.

What a model folder holds (all written atomically; nothing is a pickle):

* ``gbm.ubj`` — the XGBoost model fit on every row, in XGBoost's own UBJ format; ``gbm.json`` — what
  is needed to wrap it again (classes, feature order, parameters).
* with crops (:mod:`fusion.chain`): ``cnn/`` (the CNN ensemble, safetensors + JSON),
  ``gbm_embeddings.ubj``/``.json`` (XGBoost on the profiles + the CNN's per-well embeddings) and
  ``stack.json`` (the meta-learner over ``gbm``, ``gbm_embeddings`` and ``cnn``; the final model).
* ``oof_predictions.parquet`` — out-of-fold probabilities of every row (``Probability_<class>``),
  its ``Label``, ``Prediction`` and ``Fold``: the honest numbers the report shows.
* ``training_profiles.parquet`` — the rows and features the model was fit on (for SHAP plots).
* ``shap_values.parquet`` — TreeSHAP of the final model on those rows (one row per row × class).
* ``metrics.json``, ``explain.json`` — metrics with baselines and CIs; top features and groups.
* ``manifest.json`` — inputs with SHA-256, parameters, versions, classes, features, row counts and
  ``model_files`` (format, size, SHA-256 of each model file, checked on load).

Cross-validation is grouped, and the grouping follows from the label
(:func:`fusion.oof.choose_grouping`): a label other than the compound (a mechanism of action) →
whole compounds are held out; the compound itself → replicate plates (≥ 2 plates), else wells.
``group_by`` overrides it. ``metrics.json`` and the manifest say which grouping was used and why,
and which classes it leaves unpredictable (a class with a single compound cannot be predicted
when compounds are held out) with the accuracy ceiling that implies.

The table's columns keep their names: the compound, concentration, MoA, batch columns and the
negative controls are resolved by :func:`cellfusion_core.columns.resolve_columns` (ours, the common
pycytominer/JUMP/LINCS names, or the names given).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion import explain, metrics, modelio
from fusion.oof import choose_grouping, cross_val_proba, fold_index, grouped_folds, grouping_limits
from fusion.gbm import GBMClassifier, join_embeddings
from cellfusion_core import io
from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.layout import (ATTENTION_FILE, CNN_DIR, EXPLAIN_FILE, GBM_CONFIG, GBM_EMB_CONFIG, GBM_EMB_FILE,
                                   GBM_FILE, MANIFEST, METRICS_FILE, OOF_FILE, SHAP_FILE, STACK_FILE, TRAIN_FILE)
from cellfusion_core.columns import ROLES, control_mask, resolve_columns
from cellfusion_core.names import CELL_COUNT, PLATE, WELL, feature_columns, metadata_columns

log = logging.getLogger(__name__)

__all__ = ["train", "read_profiles", "model_features", "perturbed_labels", "PERTURBED", "PERTURBED_COLUMN"]


# CNNEnsemble settings by name: "cpu" fits a 2-core machine, "full" is the published recipe (GPU).
from fusion.cnn.presets import PRESETS as CNN_PRESETS  # noqa: E402  (torch-free module)
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


def _manifest_inputs(profiles_path: Path | None, embeddings: Any, crops: Any = None) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    if profiles_path is not None:
        inputs["profiles"] = profiles_path
    if isinstance(embeddings, (str, Path)):
        inputs["embeddings"] = Path(embeddings)
    if crops is not None:
        inputs["crops"] = Path(crops)
    return inputs


PERTURBED = "perturbed"                 # --label perturbed: negative controls vs every other well
PERTURBED_COLUMN = "Metadata_Perturbed"


def perturbed_labels(profiles: pd.DataFrame, columns, path: Path | None = None) -> pd.DataFrame:
    """A copy of ``profiles`` with ``Metadata_Perturbed``: ``"control"`` on the negative-control rows
    (:func:`cellfusion_core.columns.control_mask`, the one control rule), ``"perturbed"`` on every other row.

    Trained on it, a model answers "is this well perturbed?"; the default grouping then holds out
    whole compounds (the control rows grouped by plate), so the score is for compounds never seen.
    """
    ctrl = control_mask(profiles, columns)
    if not ctrl.any() or ctrl.all():
        raise InputError(f"--label perturbed needs negative-control rows and other rows; {int(ctrl.sum())} of "
                         f"{len(ctrl)} rows are controls", path=path,
                         hint="name the negative controls with --control (a compound value or a pandas query)")
    out = profiles.copy()
    out[PERTURBED_COLUMN] = np.where(ctrl, "control", PERTURBED)
    return out


def train(profiles: str | Path | pd.DataFrame, out_dir: str | Path, *, label: str | None = None,
          group_by: str | Sequence[str] | None = None, compound: str | None = None,
          concentration: str | None = None, moa: str | None = None, batch: str | None = None,
          control: str | None = None, embeddings: str | Path | pd.DataFrame | None = None,
          n_splits: int = 5, seed: int = 0, include_cell_count: bool = True,
          gbm_params: Mapping[str, Any] | None = None, n_jobs: int = 1,
          crops: str | Path | None = None, cnn: bool = True, cnn_config: str = "cpu",
          cnn_params: Mapping[str, Any] | None = None, stack_C: float = 1.0,
          stack_coupling: str = "per_class") -> Path:
    """Train and cross-validate XGBoost on a profile table; write the model folder ``out_dir``.

    Parameters
    ----------
    profiles:
        ``profiles.parquet`` (or CSV, or a DataFrame): one row per well, ``Metadata_*`` + features.
    label:
        The column to predict (``Metadata_Compound``, ``Metadata_MoA`` …), or a role name
        (``"compound"``, ``"moa"``) for the column resolved for it. Default: the compound column.
        ``"perturbed"``: negative controls vs every other row (:func:`perturbed_labels`; ROC AUC in
        ``metrics.json``).
    group_by:
        Column(s) whose values are never split between training and test folds. Default: from the
        label (:func:`fusion.oof.choose_grouping`) — compounds for a MoA label, replicate plates
        (else wells) for the compound.
    compound, concentration, moa, batch, control:
        The table's column for each role and the negative-control rule (a compound value or a
        pandas query), as :func:`cellfusion_core.columns.resolve_columns` takes them; default: ours or a
        recognised pycytominer/JUMP/LINCS name.
    embeddings:
        Optional per-well CNN embeddings (``fusion embed``) appended to the features.
    n_splits:
        Number of cross-validation folds (fewer when there are fewer groups).
    include_cell_count:
        Use ``Metadata_Object_Count`` (cells per well) as a feature.
    gbm_params:
        Overrides of :class:`fusion.gbm.GBMClassifier` parameters.
    crops:
        Single-cell crops (a folder with ``crops.tif`` + ``crops.parquet``, or a crop TIFF with its
        table beside it) of the same wells. With ``cnn=True``, inside each outer fold a CNN ensemble
        is trained on the training wells' crops, embeds every crop, and XGBoost is fit on the
        profiles + per-well mean embeddings; the CNN's soft vote is averaged per well; a
        meta-learner stacks ``gbm``, ``gbm_embeddings`` and ``cnn`` (see :mod:`fusion.chain`) and
        becomes the final model. SHAP then explains ``gbm_embeddings`` (group "CNN embedding").
    cnn:
        ``False`` trains the profile path only, even when crops are given.
    cnn_config, cnn_params:
        :data:`CNN_PRESETS` name (``"cpu"``: one small ResNet18-CBAM, 64 px; ``"full"``: the
        published 5-member recipe, for a GPU) and overrides of :class:`fusion.cnn.ensemble.CNNEnsemble`.
    stack_C, stack_coupling:
        Inverse regularization and coupling of the meta-learner (``"per_class"``: a weight per base
        model and class; ``"shared"``: one weight per base model; ``"full"``: a weight per input and
        class plus intercepts), rows class-balanced; see :mod:`fusion.stack`.
    """
    from rich.progress import Progress

    from fusion.stack import COUPLINGS

    if stack_coupling not in COUPLINGS:  # checked before hours of CNN training, not after
        raise ConfigError(f"unknown stack coupling {stack_coupling!r}", hint=f"use one of {', '.join(COUPLINGS)}")
    out_dir = Path(out_dir)
    profiles_path = None
    if not isinstance(profiles, pd.DataFrame):
        profiles_path = Path(profiles)
        profiles = read_profiles(profiles_path)
    spec = resolve_columns(profiles, compound=compound, concentration=concentration, moa=moa, batch=batch,
                           control=control, path=profiles_path)
    if label is None:
        spec.require("compound", what="the default label (the compound)", path=profiles_path)
        label = spec.compound
    elif label == PERTURBED and label not in profiles.columns:
        profiles = perturbed_labels(profiles, spec, path=profiles_path)
        label = PERTURBED_COLUMN
    elif label not in profiles.columns and label in ROLES and getattr(spec, label) is not None:
        label = getattr(spec, label)
    if label not in profiles.columns:
        raise InputError(f"label column {label!r} is not in the profile table", path=profiles_path,
                         hint=f"choose one of: {', '.join(metadata_columns(profiles)) or '(no Metadata_ columns)'}")
    keep = profiles[label].notna()
    if (~keep).any():
        log.warning("%d row(s) without a %s label skipped", int((~keep).sum()), label)
    profiles = profiles.loc[keep].reset_index(drop=True)
    if cnn and crops is not None and not Path(crops).exists():  # before any training, not after the XGBoost folds
        raise InputError("crops not found", path=Path(crops),
                         hint="give the folder written by `profiler extract --crops` (crops.tif + crops.parquet) "
                              "or a crop TIFF with its table beside it")
    if embeddings is not None and cnn and crops is not None:
        raise ConfigError("--embeddings and --crops cannot be combined: with crops, the CNN embeddings are "
                          "computed out of fold inside the cross-validation",
                          hint="drop --embeddings (or give --no-cnn to use the precomputed embeddings)")
    if embeddings is not None:
        profiles = join_embeddings(profiles, embeddings)
    feats = model_features(profiles, include_cell_count)
    X = profiles[feats].astype(np.float32)
    y = profiles[label].astype(str).to_numpy()
    classes = np.unique(y)
    if len(classes) < 2:
        raise InputError(f"the label {label!r} has only one value ({classes[0] if len(classes) else 'none'})",
                         path=profiles_path, hint="a classifier needs at least two classes")
    grouping = choose_grouping(profiles, label, spec, group_by)
    groups = grouping.groups
    params = {**(gbm_params or {})}
    try:
        GBMClassifier(**params)
    except TypeError as exc:
        raise ConfigError(f"unknown XGBoost parameter ({exc})") from exc
    params.setdefault("n_jobs", n_jobs)
    params.setdefault("random_state", seed)

    splits = grouped_folds(y, groups, n_splits, seed)
    fold = fold_index(splits, len(y))
    limits = grouping_limits(y, groups, splits)
    grouping_info = {**grouping.to_dict(), **limits}
    log.info("folds %s", grouping.reason)
    for note in grouping.notes:
        log.info("note: %s", note)
    if limits["single_group_classes"]:
        single = limits["single_group_classes"]
        log.warning("%d class(es) lie in a single %s group and cannot be predicted out of fold: %s%s "
                    "(accuracy ceiling %.3f)", len(single), grouping.rule, ", ".join(list(single)[:10]),
                    " …" if len(single) > 10 else "", limits["accuracy_ceiling"])
    with Progress(transient=True) as bar:
        task = bar.add_task("cross-validating XGBoost", total=None)
        oof = cross_val_proba(GBMClassifier(**params), X, y, classes, splits, groups=groups)
        bar.update(task, description="fitting XGBoost on every row")
        final = GBMClassifier(**params).fit(X, y, groups=groups)
    base_oof = {"gbm": oof}
    cnn_model = stack_model = chain = None
    explained, X_exp = final, X  # the XGBoost model SHAP explains, and its training rows
    if cnn and crops is not None:
        chain, stack_model, base_oof, oof = _train_cnn_and_stack(
            crops, profiles, X, params, y, groups, classes, splits, oof, seed, cnn_config, cnn_params, stack_C,
            stack_coupling)
        cnn_model, explained, X_exp = chain.cnn, chain.gbm_embeddings, chain.X_embeddings
    feats_exp = [str(c) for c in X_exp.columns]
    pred = classes[np.argmax(oof, axis=1)]
    summary = metrics.classification_summary(y, pred, oof, classes, seed=seed)
    base_summaries = {b: metrics.classification_summary(y, classes[np.argmax(p, axis=1)], p, classes, seed=seed)
                      for b, p in base_oof.items()} if len(base_oof) > 1 else {}

    # explanations of the final XGBoost model (on profiles + CNN embeddings with crops) on the training rows
    values, base = explain.shap_values(explained.get_booster(), X_exp, len(classes))
    control = control_mask(profiles, spec)
    top = explain.top_features(values, X_exp, y, classes, control, k=10)
    imp = explain.class_importance(values, feats_exp, classes)
    groups_imp = explain.group_attributions(imp)

    meta_cols = metadata_columns(profiles)
    oof_df = profiles[meta_cols].copy()
    oof_df["Label"] = y
    oof_df["Prediction"] = pred
    oof_df["Fold"] = fold
    for j, c in enumerate(classes):
        oof_df[PROBA_PREFIX + c] = oof[:, j]
    if len(base_oof) > 1:
        for b, p in base_oof.items():
            for j, c in enumerate(classes):
                oof_df[f"{b.upper()}_{PROBA_PREFIX}{c}"] = p[:, j]
    shap_df = pd.DataFrame(values.transpose(2, 0, 1).reshape(-1, len(feats_exp)), columns=feats_exp)
    shap_df.insert(0, "Row", np.tile(np.arange(len(y)), len(classes)))
    shap_df.insert(0, "Class", np.repeat(classes, len(y)))

    out_dir.mkdir(parents=True, exist_ok=True)
    model_files = {
        GBM_FILE: modelio.save_xgb(final, out_dir / GBM_FILE),
        GBM_CONFIG: modelio.save_json_model(final.to_config(), out_dir / GBM_CONFIG, "gbm-config-json"),
    }
    extra_manifest: dict[str, Any] = {}
    if cnn_model is not None:
        cnn_dir = cnn_model.save(out_dir / CNN_DIR)
        for f in sorted(cnn_dir.iterdir()):
            if f.is_file() and f.name != MANIFEST:
                model_files[f"{CNN_DIR}/{f.name}"] = modelio.model_file_entry(
                    f, "safetensors" if f.suffix == ".safetensors" else "json")
        model_files[GBM_EMB_FILE] = modelio.save_xgb(chain.gbm_embeddings, out_dir / GBM_EMB_FILE)
        model_files[GBM_EMB_CONFIG] = modelio.save_json_model(chain.gbm_embeddings.to_config(),
                                                              out_dir / GBM_EMB_CONFIG, "gbm-config-json")
        model_files[STACK_FILE] = modelio.save_json_model(stack_model.to_json(), out_dir / STACK_FILE, "stack-json")
        write_attention_examples(cnn_model.attention_examples_, out_dir / ATTENTION_FILE)
        extra_manifest["stack_weights"] = stack_model.base_weights()
        extra_manifest["base_model_scores"] = {b: {k: v["value"] for k, v in sm["scores"].items()}
                                               for b, sm in base_summaries.items()}
    io.write_parquet(oof_df, out_dir / OOF_FILE)
    io.write_parquet(pd.concat([profiles[[c for c in meta_cols if c not in feats_exp]], X_exp], axis=1),
                     out_dir / TRAIN_FILE)
    io.write_parquet(shap_df, out_dir / SHAP_FILE)
    io.write_json({**summary, "base_models": base_summaries, "grouping": grouping_info}, out_dir / METRICS_FILE)
    io.write_json({"label": label, "classes": list(classes), "expected_value": base.tolist(),
                   "top_features": top,
                   "class_importance": {c: imp[c].sort_values(ascending=False).to_dict() for c in imp.columns},
                   "group_attributions": {g: row.to_dict() for g, row in groups_imp.iterrows()}},
                  out_dir / EXPLAIN_FILE)
    modelio_params = {"label": label, "group_by": grouping.columns, "grouping": grouping.rule, "n_splits": len(splits),
                      "seed": seed, "include_cell_count": include_cell_count, "gbm": final.get_params(),
                      "gbm_rounds": final.n_rounds_, "cnn": cnn_model is not None,
                      "cnn_config": cnn_config if cnn_model is not None else None,
                      "cnn_params": dict(cnn_params or {}) if cnn_model is not None else None, "stack_C": stack_C,
                      "stack_coupling": stack_coupling}
    io.write_manifest(
        out_dir, command="fusion train", inputs=_manifest_inputs(profiles_path, embeddings, crops if cnn_model is not None else None),
        parameters=modelio_params,
        outputs={OOF_FILE: {"rows": len(oof_df)}, TRAIN_FILE: {"rows": len(X_exp), "features": len(feats_exp)},
                 SHAP_FILE: {"rows": len(shap_df)}},
        extra={modelio.MODEL_FILES_KEY: model_files, "classes": list(classes), "features": feats_exp,
               "profile_features": feats, "explained_model": "gbm_embeddings" if chain is not None else "gbm",
               "rows": {"total": int(len(y)), "groups": int(len(np.unique(groups))),
                        "per_class": {c: int(n) for c, n in zip(*np.unique(y, return_counts=True))}},
               "grouping": grouping_info, "columns": spec.to_dict(),
               "base_models": list(base_oof), "final_model": "stack" if cnn_model is not None else "gbm",
               **extra_manifest,
               "cv_summary": {k: v["value"] for k, v in summary["scores"].items()}},
    )
    acc = summary["scores"]["accuracy"]
    log.info("out-of-fold accuracy %.3f (majority baseline %.3f) on %d rows, %d classes; folds %s",
             acc["value"], acc["majority"], len(y), len(classes), grouping.reason)
    return out_dir


def _train_cnn_and_stack(crops, profiles: pd.DataFrame, X: pd.DataFrame, gbm_params: Mapping[str, Any],
                         y: np.ndarray, groups: np.ndarray, classes: np.ndarray, splits, gbm_oof: np.ndarray,
                         seed: int, cnn_config: str, cnn_params: Mapping[str, Any] | None, stack_C: float,
                         stack_coupling: str):
    """The design's chain on the same well folds (:mod:`fusion.chain`): per fold a CNN on the training
    wells' crops → per-well embeddings ⊕ profiles → XGBoost, and the CNN's soft vote; the stack of
    ``gbm``, ``gbm_embeddings`` and ``cnn`` with its own out-of-fold estimate; the final models.

    Returns ``(fitted chain, final stack, base-model OOF probabilities, stack OOF probabilities)``.
    """
    from rich.progress import Progress

    from fusion.chain import BASE_MODELS, chain_out_of_fold, fit_chain, match_crops
    from fusion.cnn.ensemble import CNNEnsemble
    from fusion.data import load_crops
    from fusion.stack import StackedClassifier, meta_out_of_fold_proba, stack_inputs

    if cnn_config not in CNN_PRESETS:
        raise ConfigError(f"unknown CNN configuration {cnn_config!r}", hint=f"choose one of {', '.join(CNN_PRESETS)}")
    params = {**CNN_PRESETS[cnn_config], "seed": seed, **(cnn_params or {})}
    try:
        CNNEnsemble(**params).member_configs()
    except TypeError as exc:
        raise ConfigError(f"unknown CNN parameter ({exc})") from exc
    crop_set = load_crops(crops)
    cell_row, keys = match_crops(crop_set.meta, profiles, crop_set.source)
    keep = cell_row >= 0
    images, cell_row = crop_set.images[keep], cell_row[keep]

    def make_cnn():
        return CNNEnsemble(**params)

    def make_gbm():
        return GBMClassifier(**gbm_params)

    with Progress(transient=True) as bar:
        task = bar.add_task("cross-validating the CNN → embeddings → XGBoost chain", total=len(splits) + 1)
        chain_oof = chain_out_of_fold(make_cnn, make_gbm, profiles, X, y, groups, classes, splits, images, cell_row,
                                      keys, progress=lambda: bar.advance(task))
        chain = fit_chain(make_cnn, make_gbm, profiles, X, y, groups, images, cell_row, keys)
        bar.advance(task)
    base = {"gbm": gbm_oof, **chain_oof}
    base = {b: base[b] for b in BASE_MODELS}
    stacked = stack_inputs(base, classes)
    stack_oof = meta_out_of_fold_proba(stacked, y, classes, splits, C=stack_C, coupling=stack_coupling)
    final_stack = StackedClassifier(C=stack_C, coupling=stack_coupling).fit(stacked, y)
    # example cells for the report: up to 3 per class, with the CNN's CBAM spatial attention
    final_cnn = chain.cnn
    cell_y = y[cell_row]
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(cell_y == c), min(3, int((cell_y == c).sum())), replace=False)
                           for c in classes if (cell_y == c).any()])
    from fusion.explain import cnn_attention_maps

    maps, pred_idx = cnn_attention_maps(final_cnn, images[pick])
    final_cnn.attention_examples_ = {
        "crops": np.asarray(images[pick]), "maps": maps.astype(np.float32),
        "labels": np.asarray(cell_y[pick]).astype(str), "predicted": np.asarray(final_cnn.classes_)[pred_idx].astype(str)}
    return chain, final_stack, base, stack_oof


def write_attention_examples(examples: Mapping[str, np.ndarray], path: Path) -> Path:
    """Example crops + attention maps as Parquet: one row per cell, arrays flattened with their shape."""
    crops, maps = np.asarray(examples["crops"]), np.asarray(examples["maps"], np.float32)
    table = pd.DataFrame({"Label": examples["labels"], "Predicted": examples["predicted"],
                          "Crop": [c.ravel().tolist() for c in crops], "Map": [m.ravel().tolist() for m in maps]})
    table["Shape"] = [list(crops.shape[1:])] * len(table)
    return io.write_parquet(table, path)


def read_attention_examples(path: Path) -> dict[str, np.ndarray]:
    """Inverse of :func:`write_attention_examples`."""
    t = pd.read_parquet(path)
    shape = tuple(int(v) for v in t["Shape"].iloc[0])
    return {"crops": np.stack([np.asarray(c).reshape(shape) for c in t["Crop"]]),
            "maps": np.stack([np.asarray(m, np.float32).reshape(shape[:2]) for m in t["Map"]]),
            "labels": t["Label"].astype(str).to_numpy(), "predicted": t["Predicted"].astype(str).to_numpy()}
