"""The design's fusion on profiles + single-cell crops: CNN embeddings ⊕ profiles → XGBoost, stacked.

Three base models speak about the same rows (wells):

* ``gbm`` — XGBoost on the well profiles;
* ``gbm_embeddings`` — XGBoost on the profiles joined with the CNN ensemble's per-well mean
  embeddings (:func:`fusion.cnn.ensemble.well_embeddings` → :func:`fusion.gbm.join_embeddings`);
* ``cnn`` — the CNN ensemble's soft vote, its cell probabilities averaged per well.

Inside each outer fold the CNN is trained on the training wells' crops only and then embeds every
crop, so the test wells' embeddings come from a network that never saw them (nor their labels);
``gbm_embeddings`` is trained on the training wells' rows of that fold. The stack
(:class:`fusion.stack.StackedClassifier`) is fit on the three models' out-of-fold probabilities and
estimates its own accuracy out of fold on the same folds. Final models are fit on every well.

:func:`match_crops` pairs crops with profile rows (every profiled well must have crops; this is
checked before any training). :func:`chain_out_of_fold` runs the fold loop and
:func:`fit_chain` the final models; :func:`predict_chain` runs the fitted chain on new wells.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fusion.gbm import join_embeddings
from fusion.oof import align_proba, expand_folds
from cellfusion_core.errors import InputError
from cellfusion_core.names import PLATE, WELL

log = logging.getLogger(__name__)

__all__ = ["BASE_MODELS", "match_crops", "embedding_table", "with_embeddings", "well_soft_vote",
           "chain_out_of_fold", "fit_chain", "FittedChain", "predict_chain"]

#: The base models of the chain, in the order the stack sees them.
BASE_MODELS = ("gbm", "gbm_embeddings", "cnn")


def match_crops(crop_meta: pd.DataFrame, profiles: pd.DataFrame, source=None) -> tuple[np.ndarray, list[str]]:
    """Row of ``profiles`` of every crop (−1: a well that is not profiled) and the key columns used.

    Crops and profiles are matched on ``Metadata_Plate`` (when both have it) + ``Metadata_Well``.
    A profiled well without a single crop is an :class:`InputError` (the CNN must speak about every row).
    """
    keys = [k for k in (PLATE, WELL) if k in profiles.columns and k in crop_meta.columns]
    if WELL not in keys:
        raise InputError(f"crops and profiles must both have {WELL} (and {PLATE}) to be matched", path=source,
                         hint="the crop table needs the plate and well of every crop")
    well_key = profiles[keys].astype(str).agg("/".join, axis=1).to_numpy()
    cell_key = crop_meta[keys].astype(str).agg("/".join, axis=1).to_numpy()
    row_of = {k: i for i, k in enumerate(well_key)}
    cell_row = np.array([row_of.get(k, -1) for k in cell_key], dtype=np.int64)
    if not (cell_row >= 0).any():
        raise InputError("no crop belongs to a profiled well", path=source,
                         hint="the crops' Metadata_Plate/Metadata_Well must match the profiles'")
    lost = np.setdiff1d(np.arange(len(profiles)), cell_row)
    if len(lost):
        names = well_key[lost].tolist()
        raise InputError(f"{len(lost)} profiled well(s) have no crops: {', '.join(names[:5])}"
                         f"{' …' if len(names) > 5 else ''}", path=source,
                         hint="give crops of every profiled well (profiler extract --crops), or train with --no-cnn")
    if (cell_row < 0).any():
        log.warning("%d crop(s) from wells not in the profiles ignored", int((cell_row < 0).sum()))
    return cell_row, keys


def embedding_table(cell_embeddings: np.ndarray, cell_row: np.ndarray, profiles: pd.DataFrame,
                    keys: Sequence[str]) -> pd.DataFrame:
    """Per-well mean embeddings (keys + ``Embedding_*``) of the cells of ``profiles``' rows."""
    from fusion.cnn.ensemble import well_embeddings

    meta = profiles[list(keys)].iloc[cell_row].reset_index(drop=True)
    return well_embeddings(np.asarray(cell_embeddings), meta, "mean")


def with_embeddings(profiles: pd.DataFrame, X: pd.DataFrame, emb: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``X`` (the profile features, rows = ``profiles``) with the wells' ``Embedding_*`` columns appended."""
    clash = [c for c in X.columns if str(c).startswith("Embedding_")]
    if clash:
        raise InputError(f"the profiles already hold embedding columns ({', '.join(clash[:3])}); the crops path "
                         "computes its own", hint="drop --embeddings (or the Embedding_* columns) when giving --crops")
    joined = join_embeddings(profiles[list(keys)].reset_index(drop=True), emb, keys=keys)
    cols = [c for c in joined.columns if c.startswith("Embedding_")]
    return pd.concat([X.reset_index(drop=True), joined[cols].astype(np.float32)], axis=1)


def well_soft_vote(cell_proba: np.ndarray, cell_row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean cell probability of each row in ``rows`` (every row must have cells)."""
    cell_proba = np.asarray(cell_proba, dtype=float)
    pos = {int(r): i for i, r in enumerate(rows)}
    idx = np.array([pos.get(int(r), -1) for r in cell_row])
    keep = idx >= 0
    sums = np.zeros((len(rows), cell_proba.shape[1]))
    np.add.at(sums, idx[keep], cell_proba[keep])
    counts = np.bincount(idx[keep], minlength=len(rows))
    if (counts == 0).any():
        raise InputError(f"{int((counts == 0).sum())} well(s) have no cell crops")
    return sums / counts[:, None]


def _cnn_pass(cnn, images: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every crop and class probabilities of ``cells`` (one inference pass per member)."""
    emb = cnn.embed(images)
    proba = cnn.predict_proba(images[cells]) if len(cells) else np.zeros((0, len(cnn.classes_)))
    return emb, proba


def chain_out_of_fold(make_cnn: Callable[[], Any], make_gbm: Callable[[], Any], profiles: pd.DataFrame,
                      X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, classes: np.ndarray,
                      splits: Sequence[tuple[np.ndarray, np.ndarray]], images: np.ndarray, cell_row: np.ndarray,
                      keys: Sequence[str], progress: Callable[[], Any] | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities (rows × ``classes``) of ``gbm_embeddings`` and ``cnn``.

    ``splits`` index the rows (wells); the cells follow their wells (:func:`fusion.oof.expand_folds`).
    Per fold a fresh CNN (``make_cnn()``) is trained on the training wells' crops, embeds every
    crop, and a fresh XGBoost (``make_gbm()``) is fit on the training wells' profiles + embeddings.
    ``images``/``cell_row`` hold only crops of profiled wells (``cell_row >= 0``). Classes missing
    from a training fold get probability 0 in its test rows, each row renormalised over the classes
    seen (:func:`fusion.oof.align_proba`); a training fold of one class predicts that class.
    """
    y, groups, cell_row = np.asarray(y), np.asarray(groups), np.asarray(cell_row)
    cell_splits = expand_folds(splits, cell_row)
    out = {b: np.zeros((len(y), len(classes))) for b in ("gbm_embeddings", "cnn")}
    for (tr, te), (ctr, cte) in zip(splits, cell_splits):
        if len(te) == 0:
            continue
        seen = np.unique(y[tr])
        if len(seen) == 1:  # nothing to learn: the only class seen gets probability 1 (as fusion.oof does)
            for b in out:
                out[b][te] = align_proba(np.ones((len(te), 1)), seen, classes)
            if progress is not None:
                progress()
            continue
        cnn = make_cnn().fit(images[ctr], y[cell_row[ctr]], groups=groups[cell_row[ctr]])
        emb, cell_p = _cnn_pass(cnn, images, cte)
        out["cnn"][te] = align_proba(well_soft_vote(cell_p, cell_row[cte], te), cnn.classes_, classes)
        Xe = with_embeddings(profiles, X, embedding_table(emb, cell_row, profiles, keys), keys)
        gbm = make_gbm().fit(Xe.iloc[tr], y[tr], groups=groups[tr])
        out["gbm_embeddings"][te] = align_proba(gbm.predict_proba(Xe.iloc[te]), gbm.classes_, classes)
        if progress is not None:
            progress()
    return out


@dataclass
class FittedChain:
    """The final CNN, XGBoost on profiles + embeddings, and the training rows with embeddings."""

    cnn: Any
    gbm_embeddings: Any
    X_embeddings: pd.DataFrame


def fit_chain(make_cnn: Callable[[], Any], make_gbm: Callable[[], Any], profiles: pd.DataFrame, X: pd.DataFrame,
              y: np.ndarray, groups: np.ndarray, images: np.ndarray, cell_row: np.ndarray,
              keys: Sequence[str]) -> FittedChain:
    """The final CNN on every crop, its per-well embeddings, XGBoost on every well's profiles + embeddings."""
    y, groups = np.asarray(y), np.asarray(groups)
    cnn = make_cnn().fit(images, y[cell_row], groups=groups[cell_row])
    Xe = with_embeddings(profiles, X, embedding_table(cnn.embed(images), cell_row, profiles, keys), keys)
    return FittedChain(cnn, make_gbm().fit(Xe, y, groups=groups), Xe)


def predict_chain(models: Mapping[str, Any], profiles: pd.DataFrame, X: pd.DataFrame | None,
                  images: np.ndarray | None, cell_row: np.ndarray | None, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Probabilities of each fitted base model in ``models`` on the rows of ``profiles``.

    ``models`` may hold ``gbm`` (needs ``X``, the features it was trained on), ``cnn`` (needs the
    crops: ``images`` and ``cell_row``) and ``gbm_embeddings`` (needs both: the CNN embeds the
    crops, the embeddings are averaged per well and joined to ``X``). Columns follow each model's
    ``classes_``.
    """
    out: dict[str, np.ndarray] = {}
    if "gbm" in models:
        out["gbm"] = models["gbm"].predict_proba(X)
    if "cnn" in models:
        rows = np.arange(len(profiles))
        emb, cell_p = _cnn_pass(models["cnn"], images, np.arange(len(images)))
        out["cnn"] = well_soft_vote(cell_p, cell_row, rows)
        if "gbm_embeddings" in models:
            est = models["gbm_embeddings"]
            base = [f for f in est.feature_names_in_ if not str(f).startswith("Embedding_")]
            Xe = with_embeddings(profiles, profiles[base].astype(np.float32), embedding_table(emb, cell_row, profiles, keys), keys)
            out["gbm_embeddings"] = est.predict_proba(Xe)
    return out
