"""``fusion report MODEL_DIR``: one self-contained ``report.html`` (figures embedded) + the PNGs.

Sections: a warning banner when the model predicts (almost) only one class or does not beat the
majority-class baseline; metrics (accuracy, balanced accuracy, weighted F1, top-3 accuracy) each
beside the majority-class and chance baselines with bootstrap 95 % CIs; per-class precision /
recall / F1; confusion matrix; ROC and precision-recall curves per class with AUCs; SHAP bar and
beeswarm plots per class; feature-group attribution bars (with crops, the XGBoost model on profiles + CNN
embeddings is explained and the "CNN embedding" group's share is shown per class); the stack's weight on
each base model; the base models (``gbm``, ``gbm_embeddings``, ``cnn``) beside the stack with their CIs;
a plate view per plate (predicted class and probability per well, true class, misclassified wells, cell count);
per class the top features with their direction; example cells from the highest and lowest deciles
of each top feature (when single-cell crops are available; otherwise the section says why not).

Every number comes from files in the model folder (out-of-fold predictions, SHAP values), so the
report can be rebuilt without retraining. The page itself is rendered from the jinja2 templates in
``fusion/templates/`` with autoescape on (see :func:`_env`): this module computes data, the templates
hold all markup.
"""

from __future__ import annotations

import base64
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion import explain, metrics, modelio
from fusion.train import PROBA_PREFIX
from cellfusion_core import io
from cellfusion_core.errors import ModelFileError
from cellfusion_core.layout import (ATTENTION_FILE, CROPS_TABLE, CROPS_TIF, EXPLAIN_FILE, FIGURES_DIR, OOF_FILE,
                                   REPORT_HTML, SHAP_FILE, SINGLE_CELL, TRAIN_FILE)

log = logging.getLogger(__name__)

__all__ = ["report", "FIGURES"]

FIGURES = ("confusion_matrix.png", "metrics_vs_baseline.png", "roc_curves.png", "pr_curves.png",
           "shap_bar.png", "shap_beeswarm.png", "group_attributions.png")
ONE_CLASS_FRACTION = 0.9


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    io.write_bytes(buf.getvalue(), path)
    return path


def _read_parquet(model_dir: Path, name: str) -> pd.DataFrame:
    path = model_dir / name
    if not path.is_file():
        raise ModelFileError(f"{name} is missing from the model folder", path=model_dir,
                             hint="retrain with `fusion train`")
    return pd.read_parquet(path)


# -- figures ---------------------------------------------------------------------------------
def fig_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], path: Path) -> Path:
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    cm = confusion_matrix(y, pred, labels=classes)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.55 * n))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if n <= 20:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted (out-of-fold)")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts; colour = row fraction)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def fig_metrics(summary: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    names = list(summary["scores"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(names))
    w = 0.27
    for k, (key, ci, label, colour) in enumerate((("value", "ci95", "model", "#2b6cb0"),
                                                  ("majority", "majority_ci95", "majority class", "#a0aec0"),
                                                  ("chance", None, "chance", "#e2e8f0"))):
        vals = [summary["scores"][n][key] for n in names]
        err = None
        if ci:
            lo = [summary["scores"][n][key] - summary["scores"][n][ci][0] for n in names]
            hi = [summary["scores"][n][ci][1] - summary["scores"][n][key] for n in names]
            err = np.clip([lo, hi], 0, None)
        ax.bar(x + (k - 1) * w, vals, w, yerr=err, capsize=3, label=label, color=colour, edgecolor="#4a5568")
    ax.set_xticks(x, [n.replace("_", " ") for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95 % bootstrap CI)")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title("Out-of-fold scores beside the baselines")
    return _save(fig, path)


def fig_curves(y: np.ndarray, proba: np.ndarray, classes: list[str], kind: str, path: Path) -> tuple[Path, dict]:
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    aucs: dict[str, float] = {}
    for j, c in enumerate(classes):
        t = (y == c).astype(int)
        if t.min() == t.max():
            continue
        if kind == "roc":
            fpr, tpr, _ = roc_curve(t, proba[:, j])
            aucs[c] = float(auc(fpr, tpr))
            ax.plot(fpr, tpr, label=f"{c} (AUC {aucs[c]:.2f})")
        else:
            prec, rec, _ = precision_recall_curve(t, proba[:, j])
            aucs[c] = float(average_precision_score(t, proba[:, j]))
            ax.plot(rec, prec, label=f"{c} (AP {aucs[c]:.2f}; base {t.mean():.2f})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC per class (one vs rest, out-of-fold)")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision–recall per class (out-of-fold)")
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return _save(fig, path), aucs


def _stacked_barh(table: pd.DataFrame, path: Path, xlabel: str, title: str) -> Path:
    """Horizontal bars, one per row of ``table`` (bottom to top), stacked over its columns (classes)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1.2))
    left = np.zeros(len(table))
    for c in table.columns:
        ax.barh(range(len(table)), table[c].to_numpy(), left=left, label=c)
        left += table[c].to_numpy()
    ax.set_yticks(range(len(table)), table.index, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def fig_shap_bar(importance: pd.DataFrame, path: Path, top: int = 15) -> Path:
    tot = importance.sum(axis=1).sort_values(ascending=True).tail(top)
    imp = importance.loc[tot.index]
    return _stacked_barh(imp, path, "mean |SHAP value| (log-odds), stacked by class", f"Top {len(imp)} features by SHAP")


def fig_beeswarm(shap_vals: np.ndarray, X: pd.DataFrame, importance: pd.DataFrame, classes: list[str],
                 path: Path, top: int = 8) -> Path:
    """Per class: the top features' SHAP values, one dot per row, coloured by the feature's value."""
    plt = _plt()
    n = len(classes)
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 0.38 * top * nrow + 1.2 * nrow), squeeze=False)
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        ax = axes[k // ncol][k % ncol]
        feats = importance[c].sort_values(ascending=False).index[:top][::-1]
        for i, f in enumerate(feats):
            j = X.columns.get_loc(f)
            v = shap_vals[:, j, k]
            fv = X[f].to_numpy(dtype=float, na_value=np.nan)
            lo, hi = np.nanpercentile(fv, [5, 95]) if np.isfinite(fv).any() else (0, 1)
            col = np.clip((fv - lo) / (hi - lo if hi > lo else 1), 0, 1)
            ax.scatter(v, i + rng.uniform(-0.25, 0.25, len(v)), c=np.nan_to_num(col, nan=0.5), cmap="coolwarm",
                       s=9, vmin=0, vmax=1)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_yticks(range(len(feats)), feats, fontsize=7)
        ax.set_title(f"{c}", fontsize=9)
        ax.set_xlabel("SHAP value (blue = low feature value, red = high)", fontsize=7)
    for k in range(n, nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    fig.tight_layout()
    return _save(fig, path)


def fig_groups(groups: pd.DataFrame, path: Path, top: int = 15) -> Path:
    return _stacked_barh(groups.head(top).iloc[::-1], path, "summed mean |SHAP value|, stacked by class",
                         "Attribution by feature group (compartment · category · channel)")


# -- HTML ------------------------------------------------------------------------------------
# The page is rendered from jinja2 templates shipped in fusion/templates/ (report.html.j2, plate.html.j2,
# _macros.html.j2, report.css) with autoescape on: the functions below gather plain data (text, numbers,
# base64 PNGs) and never build markup themselves, so a label, feature, plate or path cannot inject any.
@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("fusion", "templates"),
                      autoescape=select_autoescape(["html", "html.j2"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    env.filters["f3"] = lambda v: f"{v:.3f}"
    env.filters["pct1"] = lambda v: f"{v:.1%}"
    return env


def _render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def _img(path: Path, alt: str) -> dict[str, str]:
    """A figure for the templates: the PNG at ``path`` embedded as base64, with its caption."""
    return {"alt": alt, "data": base64.b64encode(path.read_bytes()).decode("ascii")}


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _warnings(summary: dict[str, Any]) -> list[str]:
    """Banner texts (plain text; the template escapes them)."""
    out = []
    frac = summary["predicted_class_fractions"]
    top_cls, top_frac = max(frac.items(), key=lambda kv: kv[1])
    if top_frac >= ONE_CLASS_FRACTION:
        out.append(f"The model predicts (almost) only one class: {top_frac:.0%} of the out-of-fold predictions "
                   f"are “{top_cls}”. Its scores say little about the other classes.")
    acc = summary["scores"]["accuracy"]
    if acc["value"] <= acc["majority"]:
        out.append(f"The model does not beat the majority-class baseline: out-of-fold accuracy "
                   f"{acc['value']:.3f} vs {acc['majority']:.3f} for always predicting "
                   f"“{summary['majority_class']}”.")
    elif acc["ci95"][0] <= acc["majority"]:
        out.append(f"The accuracy's 95 % CI [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] includes the "
                   f"majority-class baseline ({acc['majority']:.3f}): the gain is not yet clear at this sample size.")
    return out


def _grouping(manifest: dict[str, Any]) -> dict[str, Any]:
    """How the folds were grouped and why (manifest ``grouping``; older folders: the columns only)."""
    params = manifest.get("parameters", {})
    g = manifest.get("grouping")
    detail = None
    if g:
        detail = {"n_groups": g.get("n_groups"), "reason": g.get("reason", ""), "notes": list(g.get("notes", [])),
                  "accuracy_ceiling": g.get("accuracy_ceiling", 1.0)}
    return {"columns": [str(c) for c in (params.get("group_by") or [])], "detail": detail}


def _grouping_warnings(manifest: dict[str, Any]) -> list[str]:
    """Classes that lie in a single group: never in a training fold when tested, so never right."""
    g = manifest.get("grouping") or {}
    single = g.get("single_group_classes") or {}
    if not single:
        return []
    listed = ", ".join(f"{c} ({n} rows)" for c, n in single.items())
    return [f"{len(single)} class(es) lie in a single {g.get('rule')} group and cannot be predicted "
            f"out of fold: {listed}. The accuracy ceiling they imply is {g.get('accuracy_ceiling', 1.0):.3f}; "
            "judge the scores against it."]


def report(model_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``model_dir/report.html`` (or ``out``) and its PNG figures beside it; returns the HTML path."""
    model_dir = Path(model_dir)
    manifest = modelio.verify_model_dir(model_dir)
    out = Path(out) if out is not None else model_dir / REPORT_HTML
    fig_dir = out.parent / FIGURES_DIR
    classes = [str(c) for c in manifest["classes"]]
    oof = _read_parquet(model_dir, OOF_FILE)
    y = oof["Label"].astype(str).to_numpy()
    pred = oof["Prediction"].astype(str).to_numpy()
    proba = oof[[PROBA_PREFIX + c for c in classes]].to_numpy(dtype=float)
    summary = metrics.classification_summary(y, pred, proba, classes)
    explained = json.loads((model_dir / EXPLAIN_FILE).read_text(encoding="utf-8"))
    train_df = _read_parquet(model_dir, TRAIN_FILE)
    shap_df = _read_parquet(model_dir, SHAP_FILE)
    feats = [str(f) for f in manifest["features"]]
    X = train_df[feats]
    vals = np.stack([shap_df.loc[shap_df["Class"] == c, feats].to_numpy() for c in classes], axis=-1)
    importance = explain.class_importance(vals, feats, classes)
    groups = explain.group_attributions(importance)

    figs: dict[str, Path] = {}
    figs["confusion_matrix.png"] = fig_confusion(y, pred, classes, fig_dir / "confusion_matrix.png")
    figs["metrics_vs_baseline.png"] = fig_metrics(summary, fig_dir / "metrics_vs_baseline.png")
    figs["roc_curves.png"], roc = fig_curves(y, proba, classes, "roc", fig_dir / "roc_curves.png")
    figs["pr_curves.png"], pr = fig_curves(y, proba, classes, "pr", fig_dir / "pr_curves.png")
    figs["shap_bar.png"] = fig_shap_bar(importance, fig_dir / "shap_bar.png")
    figs["shap_beeswarm.png"] = fig_beeswarm(vals, X, importance, classes, fig_dir / "shap_beeswarm.png")
    figs["group_attributions.png"] = fig_groups(groups, fig_dir / "group_attributions.png")

    params = manifest.get("parameters", {})
    context = {
        "model_dir": str(model_dir.resolve()), "label": str(params.get("label")), "summary": summary,
        "classes": classes, "n_features": len(feats), "n_splits": params.get("n_splits"),
        "grouping": _grouping(manifest), "final_model": str(manifest.get("final_model")),
        "warnings": _warnings(summary) + _grouping_warnings(manifest),
        "aucs": {"roc": roc, "pr": pr},
        "figures": {
            "metrics": _img(figs["metrics_vs_baseline.png"], "Scores beside the majority-class and chance baselines"),
            "confusion": _img(figs["confusion_matrix.png"], "Confusion matrix of the out-of-fold predictions"),
            "roc": _img(figs["roc_curves.png"], "ROC curves per class"),
            "pr": _img(figs["pr_curves.png"], "Precision-recall curves per class"),
            "shap_bar": _img(figs["shap_bar.png"], "SHAP bar plot: mean |SHAP| per feature, stacked by class"),
            "shap_beeswarm": _img(figs["shap_beeswarm.png"], "SHAP beeswarm per class"),
            "groups": _img(figs["group_attributions.png"], "Attribution per feature group")},
        "explained_model": manifest.get("explained_model"),
        "stack_weights": {str(k): v for k, v in manifest.get("stack_weights", {}).items()},
        # the sections below draw their figures in the order the f-string report did
        "examples": _examples_section(model_dir, manifest, explained, fig_dir),
        "attention": _attention_section(model_dir, fig_dir),
        "models": _models_section(model_summaries(oof, classes, manifest, summary), fig_dir),
        "plate": _plate_view(oof, classes, fig_dir),
        "embedding_share": _embedding_share_section(importance),
        "top_features": explained["top_features"], "top_k": 5,
    }
    io.write_text(_render("report.html.j2", **context), out)
    log.info("report written to %s", out)
    return out


def _examples_section(model_dir: Path, manifest: dict[str, Any], explained: dict[str, Any],
                      fig_dir: Path) -> dict[str, Any]:
    """Example cells from the top features' highest and lowest deciles (``figure``), or why not (``reason``)."""
    part, reason = _example_cells(model_dir, manifest, explained, fig_dir)
    return {"figure": part, "reason": reason}


def _example_cells(model_dir: Path, manifest: dict[str, Any], explained: dict[str, Any],
                   fig_dir: Path) -> tuple[dict[str, str] | None, str]:
    """(figure, "") with the example-cell figure, or (None, reason)."""
    prof = manifest.get("inputs", {}).get("profiles", {}).get("path")
    if not prof:
        return None, "the model was trained from an in-memory table, so its single-cell data is unknown."
    extract_dir = Path(prof).parent
    sc_path = extract_dir / SINGLE_CELL
    if not sc_path.is_file():
        return None, f"no single_cell.parquet beside the profiles ({extract_dir})."
    crops = _find_crops(extract_dir)
    if crops is None:
        return None, (f"no single-cell crops were written with the profiles in {extract_dir} "
                      "(enable the crops section of the pipeline to see example cells).")
    return _render_examples(sc_path, crops, explained, fig_dir)


def _find_crops(extract_dir: Path) -> tuple[Path, Path] | None:
    """``crops.tif`` + ``crops.parquet`` written by profiler in or under the extraction folder."""

    for d in (extract_dir, extract_dir / "crops"):
        if (d / CROPS_TIF).is_file() and (d / CROPS_TABLE).is_file():
            return d / CROPS_TIF, d / CROPS_TABLE
    return None


def _crop_rgb(crop: np.ndarray) -> np.ndarray:
    """(H, W, C) crop → (H, W, 3) display image, each channel stretched to its 1–99.5 percentiles."""
    c = crop.astype(np.float32)
    if c.ndim == 2:
        c = c[..., None]
    out = np.zeros(c.shape[:2] + (3,), np.float32)
    for k in range(min(3, c.shape[-1])):
        lo, hi = np.percentile(c[..., k], [1, 99.5])
        out[..., [2, 1, 0][k] if c.shape[-1] >= 3 else k] = np.clip((c[..., k] - lo) / max(hi - lo, 1e-6), 0, 1)
    if c.shape[-1] == 1:
        out[..., 1] = out[..., 2] = out[..., 0]
    return out


def _render_examples(sc_path: Path, crops: tuple[Path, Path], explained: dict[str, Any], fig_dir: Path,
                     n_features: int = 6, n_cells: int = 5, seed: int = 0) -> tuple[dict[str, str] | None, str]:
    import tifffile

    from cellfusion_core.names import OBJECT_NUMBER, PLATE, SITE, WELL

    tif, tab_path = crops
    table = pd.read_parquet(tab_path)
    keys = [k for k in (PLATE, WELL, SITE, OBJECT_NUMBER) if k in table.columns]
    feats: list[str] = []
    for rows in explained["top_features"].values():
        for r in rows[:2]:
            if r["feature"] not in feats and not r["feature"].startswith(("Metadata_", "Embedding_")):
                feats.append(r["feature"])
    feats = feats[:n_features]
    import pyarrow.parquet as pq

    available = set(pq.read_schema(sc_path).names)
    feats = [f for f in feats if f in available]
    if not feats:
        return None, "the top features are not per-cell measurements in single_cell.parquet."
    sc = pd.read_parquet(sc_path, columns=[k for k in keys if k in available] + feats)
    table = table[keys].reset_index().rename(columns={"index": "_crop"})
    merged = sc.merge(table, on=[k for k in keys if k in sc.columns], how="inner")
    if merged.empty:
        return None, "the crops could not be matched to the single-cell rows (different object keys)."
    try:
        stack = tifffile.memmap(tif)
    except Exception:  # noqa: BLE001 - compressed or tiled files cannot be memory-mapped
        stack = tifffile.imread(tif)
    plt = _plt()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(feats), 2 * n_cells, figsize=(1.3 * 2 * n_cells, 1.45 * len(feats)), squeeze=False)
    for i, f in enumerate(feats):
        v = merged[f].to_numpy(dtype=float, na_value=np.nan)
        ok = np.isfinite(v)
        lo_cut, hi_cut = np.nanpercentile(v[ok], [10, 90])
        lo_idx = np.flatnonzero(ok & (v <= lo_cut))
        hi_idx = np.flatnonzero(ok & (v >= hi_cut))
        picks = [rng.choice(lo_idx, min(n_cells, len(lo_idx)), replace=False),
                 rng.choice(hi_idx, min(n_cells, len(hi_idx)), replace=False)]
        for side, idx in enumerate(picks):
            for j in range(n_cells):
                ax = axes[i][side * n_cells + j]
                ax.axis("off")
                if j < len(idx):
                    row = merged.iloc[int(idx[j])]
                    ax.imshow(_crop_rgb(np.asarray(stack[int(row["_crop"])])))
                    ax.set_title(f"{row[f]:.3g}", fontsize=6)
        axes[i][0].text(-0.1, 0.5, f, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle("Example cells: lowest decile (left 5) and highest decile (right 5) of each top feature", fontsize=9)
    path = _save(fig, fig_dir / "example_cells.png")
    return _img(path, "Example cells from the lowest and highest deciles of each top feature"), ""


def _attention_section(model_dir: Path, fig_dir: Path) -> dict[str, str] | None:
    """CBAM spatial attention of the CNN on example cells (only when a CNN was trained)."""
    from fusion.train import read_attention_examples

    path = model_dir / ATTENTION_FILE
    if not path.is_file():
        return None
    z = read_attention_examples(path)
    crops, maps, labels, pred = z["crops"], z["maps"], z["labels"], z["predicted"]
    plt = _plt()
    n = len(crops)
    ncol = min(n, 6)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(2 * nrow, ncol, figsize=(1.6 * ncol, 3.3 * nrow), squeeze=False)
    for k in range(nrow * ncol):
        r, c = divmod(k, ncol)
        a1, a2 = axes[2 * r][c], axes[2 * r + 1][c]
        a1.axis("off")
        a2.axis("off")
        if k < n:
            a1.imshow(_crop_rgb(crops[k]))
            a1.set_title(f"{labels[k]}\n→ {pred[k]}", fontsize=6)
            a2.imshow(_crop_rgb(crops[k]).mean(axis=2), cmap="gray")
            a2.imshow(maps[k], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.suptitle("CNN (CBAM) spatial attention on example cells: crop (true → predicted) and attention overlay",
                 fontsize=8)
    out = _save(fig, fig_dir / "cnn_attention.png")
    return _img(out, "CBAM spatial attention maps on example cells")


# -- base models side by side ----------------------------------------------------------------
BASE_LABELS = {"gbm": "XGBoost on profiles (gbm)", "gbm_embeddings": "XGBoost on profiles + CNN embeddings "
               "(gbm_embeddings)", "cnn": "CNN soft vote (cnn)", "stack": "stack (final)"}


def model_summaries(oof: pd.DataFrame, classes: list[str], manifest: dict[str, Any],
                    summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Out-of-fold summaries of the final model and of every base model stored in ``oof``.

    Base-model probabilities are the ``<BASE>_Probability_<class>`` columns written by ``fusion train``.
    """
    y = oof["Label"].astype(str).to_numpy()
    out = {str(manifest.get("final_model", "gbm")): summary}
    if len(manifest.get("base_models", [])) < 2:
        return out
    for b in manifest["base_models"]:
        cols = [f"{b.upper()}_{PROBA_PREFIX}{c}" for c in classes]
        if not all(c in oof.columns for c in cols):
            continue
        p = oof[cols].to_numpy(dtype=float)
        out[b] = metrics.classification_summary(y, np.asarray(classes)[p.argmax(1)], p, classes)
    return out


def fig_models(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: each score of each model with its bootstrap 95 % CI, and the majority baseline."""
    plt = _plt()
    names = list(next(iter(summaries.values()))["scores"])
    models = list(summaries)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = np.arange(len(names))
    w = 0.8 / (len(models) + 1)
    for k, m in enumerate(models):
        s = summaries[m]["scores"]
        vals = np.array([s[n]["value"] for n in names])
        err = np.clip([[s[n]["value"] - s[n]["ci95"][0] for n in names],
                       [s[n]["ci95"][1] - s[n]["value"] for n in names]], 0, None)
        ax.bar(x + (k - len(models) / 2) * w, vals, w, yerr=err, capsize=2, label=m, edgecolor="#4a5568")
    first = next(iter(summaries.values()))["scores"]
    ax.bar(x + (len(models) - len(models) / 2) * w, [first[n]["majority"] for n in names], w, color="#cbd5e0",
           edgecolor="#4a5568", label="majority class")
    ax.set_xticks(x, [n.replace("_", " ") for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("out-of-fold score (95 % CI)")
    ax.legend(fontsize=8, ncol=len(models) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title("Base models and the stack on the same folds")
    return _save(fig, path)


def _models_section(summaries: dict[str, dict[str, Any]], fig_dir: Path) -> dict[str, Any] | None:
    """The base models and the stack side by side: each score with its CI, and the majority baseline."""
    if len(summaries) < 2:
        return None
    first = next(iter(summaries.values()))["scores"]
    fig = fig_models(summaries, fig_dir / "model_comparison.png")
    return {"scores": list(first), "baseline": first,
            "rows": [{"label": BASE_LABELS.get(m, m), "scores": s["scores"]} for m, s in summaries.items()],
            "figure": _img(fig, "Scores of the base models and the stack beside the majority-class baseline")}


def _embedding_share_section(importance: pd.DataFrame) -> dict[str, Any] | None:
    """How much of the explained XGBoost model's attribution the CNN embedding carries, per class."""
    groups = [explain.feature_group(f) for f in importance.index]
    if "CNN embedding" not in groups:
        return None
    share = explain.group_share(importance, "CNN embedding")
    return {"shares": {str(c): v for c, v in share.items()}, "n_features": sum(g == "CNN embedding" for g in groups)}


# -- plate view -------------------------------------------------------------------------------
MAX_PLATES = 24


def parse_well(well: str) -> tuple[int, int] | None:
    """``"B03"`` → (row 1, column 2) (0-based); None when the name is not <letters><number>."""
    import re

    m = re.fullmatch(r"\s*([A-Za-z]{1,2})0*(\d{1,3})\s*", str(well))
    if not m:
        return None
    letters = m.group(1).upper()
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - 64)
    return row - 1, int(m.group(2)) - 1


def plate_shape(rows: int, cols: int) -> tuple[int, int]:
    """The smallest standard plate (6 … 1536 wells) that holds the given extent."""
    for r, c in ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48)):
        if rows <= r and cols <= c:
            return r, c
    return rows, cols


def _row_name(i: int) -> str:
    return chr(65 + i) if i < 26 else chr(64 + i // 26) + chr(65 + i % 26)


def fig_plate(plate: str, wells: pd.DataFrame, classes: list[str], colours: dict[str, Any], path: Path) -> Path:
    """Plate map of one plate: predicted class (colour) × its probability (opacity), the true class
    (inner dot), misclassified wells (red ×), and the cell count per well (second panel)."""
    from matplotlib.patches import Patch, Rectangle

    plt = _plt()
    R, C = plate_shape(int(wells["_row"].max()) + 1, int(wells["_col"].max()) + 1)
    scale = 0.42 if C <= 12 else 0.3
    fig, axes = plt.subplots(1, 2, figsize=(2 * (C * scale + 1.2) + 1.5, R * scale + 1.6))
    ax, axc = axes
    for a in axes:
        a.set_xlim(-0.5, C - 0.5)
        a.set_ylim(R - 0.5, -0.5)
        a.set_xticks(range(C), [str(c + 1) for c in range(C)], fontsize=6 if C > 12 else 8)
        a.set_yticks(range(R), [_row_name(r) for r in range(R)], fontsize=6 if R > 8 else 8)
        a.set_aspect("equal")
        a.tick_params(length=0)
        for r in range(R):
            for c in range(C):
                a.add_patch(Rectangle((c - 0.45, r - 0.45), 0.9, 0.9, fill=False, ec="#e2e8f0", lw=0.5))
    small = C <= 12
    for _, w in wells.iterrows():
        r, c = int(w["_row"]), int(w["_col"])
        ax.add_patch(Rectangle((c - 0.45, r - 0.45), 0.9, 0.9, color=colours[w["Prediction"]],
                               alpha=float(np.clip(w["_p"], 0.15, 1.0)), lw=0))
        ax.scatter([c], [r], s=14 if small else 6, color=colours[w["Label"]], edgecolors="white", linewidths=0.5,
                   zorder=3)
        if w["Prediction"] != w["Label"]:
            ax.plot([c - 0.4, c + 0.4], [r - 0.4, r + 0.4], color="#c53030", lw=1.2, zorder=4)
            ax.plot([c - 0.4, c + 0.4], [r + 0.4, r - 0.4], color="#c53030", lw=1.2, zorder=4)
        if small:
            ax.text(c, r + 0.32, f"{w['_p']:.2f}", ha="center", va="center", fontsize=5, zorder=5)
    wrong = int((wells["Prediction"] != wells["Label"]).sum())
    ax.set_title(f"predicted class (opacity = its probability), dot = true class, × = wrong "
                 f"({wrong}/{len(wells)})", fontsize=7)
    if "_n" in wells and wells["_n"].notna().any():
        grid = np.full((R, C), np.nan)
        grid[wells["_row"].astype(int), wells["_col"].astype(int)] = wells["_n"].astype(float)
        im = axc.imshow(grid, cmap="viridis", origin="upper", extent=(-0.5, C - 0.5, R - 0.5, -0.5))
        fig.colorbar(im, ax=axc, fraction=0.03, label="cells per well")
        if small:
            for _, w in wells.iterrows():
                if pd.notna(w["_n"]):
                    axc.text(w["_col"], w["_row"], f"{int(w['_n'])}", ha="center", va="center", fontsize=5,
                             color="white")
        axc.set_title("cell count (Metadata_Object_Count)", fontsize=7)
    else:
        axc.set_title("no cell count in the table", fontsize=7)
    handles = [Patch(color=colours[c], label=c) for c in classes]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), fontsize=6, frameon=False)
    fig.suptitle(f"Plate {plate}: out-of-fold predictions of the final model", fontsize=9)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(classes) // 6), 1, 0.95))
    return _save(fig, path)


def _plate_view(oof: pd.DataFrame, classes: list[str], fig_dir: Path) -> dict[str, Any]:
    """Per plate a plate map (see :func:`fig_plate`) and a row of the plate table; or why there is none."""
    from cellfusion_core.names import CELL_COUNT, PLATE, WELL

    if WELL not in oof.columns:
        return {"missing_column": WELL}
    pos = [parse_well(w) for w in oof[WELL]]
    if any(p is None for p in pos):
        return {"missing_column": None, "bad_wells": [str(w) for w, p in zip(oof[WELL], pos) if p is None][:3]}
    df = oof.assign(_row=[p[0] for p in pos], _col=[p[1] for p in pos],
                    _plate=oof[PLATE].astype(str) if PLATE in oof.columns else "plate",
                    _n=oof[CELL_COUNT] if CELL_COUNT in oof.columns else np.nan,
                    Label=oof["Label"].astype(str), Prediction=oof["Prediction"].astype(str))
    proba = df[[PROBA_PREFIX + c for c in classes]].to_numpy(dtype=float)
    df["_p"] = proba[np.arange(len(df)), [classes.index(p) for p in df["Prediction"]]]
    cmap = _plt().get_cmap("tab20" if len(classes) > 10 else "tab10")
    colours = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    plates = list(dict.fromkeys(df["_plate"]))
    figures, rows = [], []
    for k, plate in enumerate(plates):
        wells = df[df["_plate"] == plate]
        rows.append({"plate": plate, "wells": len(wells),
                     "accuracy": float((wells["Prediction"] == wells["Label"]).mean()),
                     "median_cells": float(wells["_n"].median()) if wells["_n"].notna().any() else None})
        if k < MAX_PLATES:
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in plate)
            path = fig_plate(plate, wells, classes, colours, fig_dir / f"plate_{k:02d}_{safe}.png")
            figures.append(_img(path, f"Plate {plate}: predicted class and probability per well, true class, "
                                      "misclassified wells, cell count"))
    return {"missing_column": None, "bad_wells": [], "rows": rows, "figures": figures,
            "n_plates": len(plates), "max_plates": MAX_PLATES}


def _plate_section(oof: pd.DataFrame, classes: list[str], fig_dir: Path) -> str:
    """The plate view on its own, as HTML (the template the report includes)."""
    return _render("plate.html.j2", plate=_plate_view(oof, classes, fig_dir))
