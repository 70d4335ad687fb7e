"""CBAM-ResNet ensemble on the real BBBC021 single-cell crops: MoA accuracy under compound-grouped CV.

Cross-validation: StratifiedGroupKFold over compounds (stratified by MoA so that each MoA's
compounds spread over the folds); DMSO is one "compound" of ~5,400 cells, so its cells are grouped
by plate instead and spread over the folds. Every fold trains the ensemble on the other folds'
cells (balanced to ``target_per_class`` per MoA) and predicts the held-out compounds' cells.

Printed (benchmarks/_common.emit, one JSON line each), beside the majority-class baseline
(the training folds' most frequent MoA, i.e. DMSO):
  cell level       — accuracy, balanced accuracy, weighted F1 over all held-out cells
  treatment level  — the same over treatments (compound × concentration; probabilities averaged
                     over the treatment's cells)
plus training throughput (images/s), wall time and peak memory (and GPU utilization on CUDA).

Configurations (fusion.cnn.presets.PRESETS, plus the number of folds):
  --config cpu   ResNet18-CBAM, 64 px, one member, 3 folds, 8 epochs of 150 cells per MoA, backbone
                 and head LR 1e-3 (from scratch), no validation share (under an hour on a 2-core CPU)
  --config full  the published recipe: 5 members (ResNet34/50/101/50/34), 224 px, bf16, 5 folds,
                 20 epochs with early stopping (a GPU job: --device cuda)
Every held-out cell is predicted unless --max-test caps the cells per fold (a quick check).

    nice -n 10 .venv/bin/python benchmarks/bbbc021_crops_cnn.py --config cpu --threads 1 \
        > benchmarks/results/bbbc021_crops_cnn_cpu.jsonl
    # quick check that it learns (~10 min on a loaded machine):
    ... --folds 2 --epochs 3 --target-per-class 80 --max-test 2500
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, peak_rss_mb, require_shared  # noqa: E402

from fusion.cnn.presets import PRESETS  # noqa: E402

CONFIGS = {
    "cpu": dict(PRESETS["cpu"], folds=3),
    "full": dict(PRESETS["full"], target_per_class=600, folds=5),  # + the estimator's defaults (the recipe)
}


def metrics(y_true, y_pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--target-per-class", type=int, default=None, help="training cells per MoA per epoch")
    ap.add_argument("--max-test", type=int, default=None, help="predict at most this many held-out cells per fold")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a loaded machine)")
    ap.add_argument("--compile", action="store_true", help="torch.compile (GPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import torch
    from sklearn.model_selection import StratifiedGroupKFold

    from fusion.cnn.ensemble import CNNEnsemble
    from fusion.cnn.train import resolve_device
    from fusion.data import load_crops
    from cellfusion_core.names import COMPOUND, CONCENTRATION, MOA, PLATE

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(CONFIGS[args.config])
    folds = args.folds or cfg.pop("folds")
    cfg.pop("folds", None)
    if args.epochs:
        cfg["epochs"] = args.epochs
    if args.target_per_class:
        cfg["target_per_class"] = args.target_per_class
    max_test = args.max_test
    est_defaults = CNNEnsemble().get_params()
    settings = {**est_defaults, **cfg}
    device = resolve_device(args.device)
    path = require_shared("bbbc021", "crops", "bbbc021_crops.tif")
    t0 = time.perf_counter()
    crops = load_crops(path)
    meta = crops.meta
    y = crops.labels("moa")
    compound = meta[COMPOUND].astype(str).to_numpy()
    control = y == "DMSO"
    groups = np.where(control, "DMSO|" + meta[PLATE].astype(str).to_numpy(), compound)
    treatment = compound + "@" + meta[CONCENTRATION].astype(str).to_numpy()
    rng = np.random.default_rng(args.seed)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=args.seed)
    cell_true, cell_pred, cell_base = [], [], []
    trt_true, trt_pred, trt_base = [], [], []
    n_train_images, train_seconds = 0, 0.0
    for k, (tr, te) in enumerate(cv.split(np.zeros(len(y)), y, groups)):
        if max_test is not None and len(te) > max_test:
            te = np.sort(rng.choice(te, size=max_test, replace=False))
        est = CNNEnsemble(device=args.device, compile=args.compile, seed=args.seed + 100 * k, **cfg)
        t = time.perf_counter()
        est.fit(crops.images[tr], y[tr], groups=groups[tr])
        train_seconds += time.perf_counter() - t
        n_train_images += sum(len(h["epochs"]) for h in est.histories_) * settings["target_per_class"] * len(np.unique(y[tr]))
        proba = est.predict_proba(crops.images[te])
        majority = max(np.unique(y[tr]), key=lambda c: int((y[tr] == c).sum()))
        pred = est.classes_[proba.argmax(1)]
        cell_true.append(y[te]); cell_pred.append(pred); cell_base.append(np.full(len(te), majority))
        for t_id in np.unique(treatment[te]):
            sel = treatment[te] == t_id
            trt_true.append(y[te][sel][0])
            trt_pred.append(est.classes_[proba[sel].mean(0).argmax()])
            trt_base.append(majority)
        fold_m = metrics(y[te], pred)
        logging.info("fold %d/%d: %d train / %d test cells, held-out compounds %s; %s", k + 1, folds, len(tr), len(te),
                     sorted(set(compound[te]) - {"DMSO"}), fold_m)
    cell = metrics(np.concatenate(cell_true), np.concatenate(cell_pred))
    cell_b = metrics(np.concatenate(cell_true), np.concatenate(cell_base))
    trt = metrics(trt_true, trt_pred)
    trt_b = metrics(trt_true, trt_base)
    extra = dict(config=args.config, backbones=list(settings["backbones"]), image_size=settings["image_size"],
                 epochs=settings["epochs"], target_per_class=settings["target_per_class"],
                 lr_backbone=settings["lr_backbone"], val_fraction=settings["val_fraction"], folds=folds,
                 max_test_per_fold=max_test, threads=torch.get_num_threads(), device=str(device),
                 cv="StratifiedGroupKFold by compound (DMSO by plate)",
                 n_cells=int(sum(map(len, cell_true))), n_treatments=len(trt_true),
                 precision="bf16" if device.type == "cuda" else "fp32")
    for level, m, b in (("cell", cell, cell_b), ("treatment", trt, trt_b)):
        for name in ("accuracy", "balanced_accuracy", "f1_weighted"):
            emit(f"bbbc021_crops_cnn_{level}_{name}", round(m[name], 4), "fraction", round(b[name], 4),
                 baseline_kind="majority class", **extra)
    emit("bbbc021_crops_cnn_train_throughput", round(n_train_images / max(train_seconds, 1e-9), 2), "images/s",
         None, note="training images incl. validation passes excluded; all folds", **extra)
    if device.type == "cuda":
        try:
            util = torch.cuda.utilization()
        except Exception as exc:  # pynvml absent
            util = f"unavailable ({exc})"
        emit("bbbc021_crops_cnn_gpu_utilization", util, "percent", None, **extra)
    emit("bbbc021_crops_cnn_wall_time", round(time.perf_counter() - t0, 1), "s", None, **extra)
    emit("bbbc021_crops_cnn_peak_rss", round(peak_rss_mb(), 1), "MB", None, **extra)


if __name__ == "__main__":
    main()
