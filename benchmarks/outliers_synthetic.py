"""Per-cell outlier flags of ``profiler extract`` against defects planted in the synthetic plate.

A plate from :func:`profiler.synthetic.make_example_plate` with ``defects=D`` (a third each of
bright debris over the nucleus, out-of-focus cells and fused nuclei, in every well) goes through
``profiler extract`` (default pipeline ``example``, default ``outliers:`` section: model fitted on
the DMSO wells' cells). Every measured cell is matched to its true cell through its nucleus centre
and the ground-truth label images (:func:`profiler.synthetic.defect_truth`); then, per defect kind:

* recall of ``Metadata_Outlier`` (flagged / planted cells of that kind that were measured), beside
  the random baseline: random flags at the same rate have an expected recall equal to that rate;
* precision against the clean cells (flagged of the kind / flagged of the kind or clean), beside the
  kind's share of those cells (the expected precision of random flags);
* ROC AUC of ``Metadata_Outlier_Score`` (kind vs clean; random 0.5).

Also the overall precision and recall of the flags (any kind), at the default ``contamination``
(0.01) and at ``contamination = D`` (the threshold is recomputed from ``outliers.json``'s control
sample: the (1 − c) quantile of the control cells' scores); each on all wells (where cells of a
treatment with a strong phenotype also lie outside the control distribution, and count as false
flags here) and on the DMSO wells alone (defects are the only departure there).

    python benchmarks/outliers_synthetic.py [--wells 10] [--sites 1] [--size 512] [--defects 0.15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks._common import emit  # noqa: E402
from cellfusion_core.layout import OUTLIERS_MODEL, SINGLE_CELL  # noqa: E402
from profiler.synthetic import DEFECT_KINDS  # noqa: E402


def flag_metrics(kinds: np.ndarray, flags: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """Precision/recall (and AUC) of boolean ``flags`` per planted kind, with the random baselines."""
    from sklearn.metrics import roc_auc_score

    m = kinds != "unmatched"
    kinds, flags = kinds[m], np.asarray(flags, bool)[m]
    rate = float(flags.mean())
    clean = kinds == "clean"
    out = {"cells": int(m.sum()), "unmatched": int((~m).sum()), "flag_rate": rate, "kinds": {}}
    defective = ~clean
    out["precision"] = float(defective[flags].mean()) if flags.any() else float("nan")
    out["precision_random"] = float(defective.mean())
    out["recall"] = float(flags[defective].mean()) if defective.any() else float("nan")
    out["recall_random"] = rate
    for k in DEFECT_KINDS:
        is_k = kinds == k
        if not is_k.any():
            continue
        sel = is_k | clean
        fk, fc = int((flags & is_k).sum()), int((flags & clean).sum())
        rec = {"n": int(is_k.sum()), "recall": fk / is_k.sum(), "recall_random": rate,
               "precision": fk / (fk + fc) if fk + fc else float("nan"),
               "precision_random": is_k.sum() / sel.sum()}
        if scores is not None:
            rec["auc"] = float(roc_auc_score(is_k[sel], np.asarray(scores)[m][sel]))
        out["kinds"][k] = rec
    return out


def run(plate_dir: Path, out_dir: Path, *, wells: int, sites: int, size: int, defects: float, seed: int) -> dict:
    from profiler.extract import extract
    from profiler.outliers import load_model, score_matrix
    from profiler.synthetic import defect_truth, make_example_plate

    make_example_plate(plate_dir, n_wells=wells, n_sites=sites, size=size, seed=seed, defects=defects)
    extract(plate_dir, out_dir, workers=0, progress=False)
    model = load_model(out_dir / OUTLIERS_MODEL)
    cols = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Control", "Metadata_Outlier_Score",
            "Metadata_Outlier", "Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]
    cells = pd.read_parquet(out_dir / SINGLE_CELL, columns=cols)
    kinds = defect_truth(cells, plate_dir)
    score = cells["Metadata_Outlier_Score"].to_numpy()
    res = {"default": flag_metrics(kinds, cells["Metadata_Outlier"].to_numpy(), score)}
    ctrl_only = cells["Metadata_Control"].eq("negative").to_numpy()   # no treatment phenotype in the way
    res["control wells, default"] = flag_metrics(kinds[ctrl_only], cells["Metadata_Outlier"].to_numpy()[ctrl_only],
                                                 score[ctrl_only])
    # the same model at contamination = the planted rate: threshold from the control cells' scores
    ctrl = cells["Metadata_Control"].eq("negative").to_numpy()
    if model.n_fit >= ctrl.sum():  # every control cell was in the fit sample: the quantile is the model's
        thr = float(np.quantile(score[ctrl], 1 - defects))
        res[f"contamination={defects:g}"] = flag_metrics(kinds, score > thr, score)
        res[f"control wells, contamination={defects:g}"] = flag_metrics(kinds[ctrl], score[ctrl] > thr, score[ctrl])
    res["n_fit"], res["features"] = model.n_fit, len(model.features)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wells", type=int, default=10)
    ap.add_argument("--sites", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--defects", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="write the plate and outputs here (default: a temp dir)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        res = run(root / "plate", root / "out", wells=a.wells, sites=a.sites, size=a.size, defects=a.defects,
                  seed=a.seed)
    plate = {"wells": a.wells, "sites": a.sites, "size": a.size, "defects": a.defects, "seed": a.seed,
             "n_fit": res["n_fit"], "features": res["features"]}
    for setting in ("default", f"contamination={a.defects:g}", "control wells, default",
                    f"control wells, contamination={a.defects:g}"):
        r = res.get(setting)
        if r is None:
            continue
        emit(f"outlier flags ({setting}): precision, any defect", r["precision"], "fraction",
             baseline=r["precision_random"], recall=r["recall"], recall_random=r["recall_random"],
             flag_rate=r["flag_rate"], cells=r["cells"], unmatched=r["unmatched"], plate=plate)
        for k, rk in r["kinds"].items():
            emit(f"outlier flags ({setting}): recall, {k}", rk["recall"], "fraction", baseline=rk["recall_random"],
                 precision_vs_clean=rk["precision"], precision_random=rk["precision_random"],
                 auc=rk.get("auc"), auc_random=0.5, n=rk["n"], plate=plate)


if __name__ == "__main__":
    main()
