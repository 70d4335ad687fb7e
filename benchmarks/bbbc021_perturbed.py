"""BBBC021 (Ljosa 2013 per-well means, DMSO kept): "is this well perturbed?"

Two answers on the same normalised table (preset ``default``: per-plate mad_robustize to the DMSO
wells, variance and NaN filters; no MoA label is used anywhere here):

1. ``fusion train --label perturbed``: XGBoost, DMSO wells (the one control rule of
   cellfusion_core.columns) vs every other well, out-of-fold on compound-grouped folds (a compound's wells
   are never in training and test at once; DMSO wells grouped by plate). Printed per fold seed:
   ROC AUC beside the majority baseline (0.5), accuracy beside the majority class, and the
   fraction of DMSO wells called perturbed (false-positive rate at p = 0.5).
2. ``profiler evaluate``'s per-treatment activity (profiler.evaluate.phenotypic_activity: copairs
   mAP of a treatment's replicate wells against the DMSO wells, FDR-corrected p < 0.05).

The last line compares them per treatment: a treatment is "called" by the classifier when the mean
out-of-fold P(perturbed) of its wells is above 0.5.

    python benchmarks/bbbc021_perturbed.py [--seeds 0 1 2] [--preset default]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks._common import emit, require_shared  # noqa: E402
from cellfusion_core.layout import METRICS_FILE, OOF_FILE  # noqa: E402
from fusion.train import train  # noqa: E402
from profiler.evaluate import phenotypic_activity  # noqa: E402
from profiler.datasets import read_bbbc021_wells  # noqa: E402
from cellfusion_core.names import COMPOUND, CONCENTRATION  # noqa: E402
from profiler.profiles import apply_recipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fold-assignment seeds")
    ap.add_argument("--preset", default="default", help="profile recipe applied to the per-well table")
    ap.add_argument("--jobs", type=int, default=2, help="XGBoost threads")
    args = ap.parse_args()
    folder = require_shared("bbbc021", "ljosa2013_per_well_mean.csv.gz").parent
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    prof = apply_recipe(read_bbbc021_wells(folder), args.preset)
    prof = prof.drop(columns=[c for c in prof.columns if c == "Metadata_MoA"])  # no MoA anywhere
    n_ctrl = int((prof[COMPOUND] == "DMSO").sum())
    emit("bbbc021 perturbed: wells", len(prof), "wells", baseline=None, dmso_wells=n_ctrl,
         treated_wells=len(prof) - n_ctrl, compounds=int(prof[COMPOUND].nunique()) - 1, preset=args.preset)
    calls = []
    aucs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            with contextlib.redirect_stdout(sys.stderr):  # the progress bar: stdout holds the JSON lines only
                out = train(prof, Path(tmp) / "model", label="perturbed", seed=seed, n_jobs=args.jobs)
            m = json.loads((out / METRICS_FILE).read_text())
            oof = pd.read_parquet(out / OOF_FILE)
        auc, acc = m["scores"]["roc_auc"], m["scores"]["accuracy"]
        bal = m["scores"]["balanced_accuracy"]
        p = oof["Probability_perturbed"].to_numpy()
        is_ctrl = (oof["Label"] == "control").to_numpy()
        aucs.append(auc["value"])
        emit(f"bbbc021 fusion train --label perturbed ROC AUC (seed {seed})", round(auc["value"], 4), "ROC AUC",
             baseline=auc["majority"], baseline_kind="majority class (constant score)",
             ci95=[round(v, 4) for v in auc["ci95"]], accuracy=round(acc["value"], 4),
             accuracy_majority=round(acc["majority"], 4), balanced_accuracy=round(bal["value"], 4),
             balanced_accuracy_chance=round(bal["chance"], 4),
             dmso_called_perturbed=round(float((p[is_ctrl] > 0.5).mean()), 4),
             treated_called_perturbed=round(float((p[~is_ctrl] > 0.5).mean()), 4),
             grouping=m.get("grouping", {}).get("rule"))
        calls.append(oof.loc[~is_ctrl].assign(p=p[~is_ctrl]).groupby([COMPOUND, CONCENTRATION])["p"].mean())
    emit("bbbc021 fusion train --label perturbed ROC AUC (mean over seeds)", round(float(np.mean(aucs)), 4),
         "ROC AUC", baseline=0.5, seeds=args.seeds, per_seed=[round(a, 4) for a in aucs])
    act = phenotypic_activity(prof, null_size=10000, seed=0).set_index([COMPOUND, CONCENTRATION])
    scored = act[act["scored"]]
    emit("bbbc021 profiler evaluate activity: treatments differing from DMSO", int(scored["active"].sum()),
         "treatments (FDR-corrected p < 0.05)", baseline=None, scored=len(scored), treatments=len(act),
         fraction=round(float(scored["active"].astype(bool).mean()), 4),
         map_activity=round(float(scored["mAP"].mean()), 4), chance_map=round(float(scored["chance_mAP"].mean()), 4))
    called = (pd.concat(calls, axis=1).mean(axis=1) > 0.5).reindex(scored.index)
    active = scored["active"].astype(bool)
    emit("bbbc021 perturbed: classifier call vs mAP activity, per treatment", round(float((called == active).mean()), 4),
         "agreement", baseline=round(float(max(active.mean(), 1 - active.mean())), 4),
         baseline_kind="always the more common mAP verdict", both=int((called & active).sum()),
         classifier_only=int((called & ~active).sum()), map_only=int((~called & active).sum()),
         neither=int((~called & ~active).sum()))


if __name__ == "__main__":
    main()
