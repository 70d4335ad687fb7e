"""BBBC021 (Ljosa 2013 per-well means): NSC / NSCB for every normalization + feature-selection recipe tried.

Every recipe is printed (honest reporting). MoA labels are used only to score, never to choose:
the preset `bbbc021_best` was fixed a priori (see docs/profiles.md): per-plate robustize to DMSO
and drop position/numbering features (no thresholds to tune).

    python benchmarks/bbbc021_profiles.py [--map]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, require_shared  # noqa: E402
from profiler.evaluate import evaluate  # noqa: E402
from profiler.ingest import read_bbbc021_wells  # noqa: E402
from profiler.profiles import POSITION_BLOCKLIST, apply_recipe  # noqa: E402

BL = list(POSITION_BLOCKLIST)
RECIPES = {
    "naive_plate_standardize": {"normalize": "standardize", "feature_select": ["drop_na_columns"]},
    "plate_robustize": {"normalize": "robustize", "feature_select": ["drop_na_columns"]},
    "plate_mad_robustize": {"normalize": "mad_robustize", "feature_select": ["drop_na_columns"]},
    "plate_robustize+blocklist": {"normalize": "robustize", "blocklist": BL,
                                  "feature_select": ["blocklist", "drop_na_columns"]},
    "plate_robustize+blocklist+var+corr0.9": {"normalize": "robustize", "blocklist": BL,
                                              "feature_select": ["blocklist", "drop_na_columns", "variance_threshold",
                                                                 "correlation_threshold"]},
    "plate_robustize+blocklist+spherize_dmso_eps1e-6": {
        "normalize": "robustize", "blocklist": BL, "feature_select": ["blocklist", "drop_na_columns", "variance_threshold"],
        "whiten": {"samples": "controls", "epsilon": 1e-6}},
    "plate_robustize+blocklist+spherize_dmso_eps10": {
        "normalize": "robustize", "blocklist": BL, "feature_select": ["blocklist", "drop_na_columns", "variance_threshold"],
        "whiten": {"samples": "controls", "epsilon": 10.0}},
    "plate_robustize+blocklist+spherize_all_eps1": {
        "normalize": "robustize", "blocklist": BL, "feature_select": ["blocklist", "drop_na_columns", "variance_threshold"],
        "whiten": {"samples": "all", "epsilon": 1.0}},
    "plate_robustize+blocklist+spherize_all_eps10": {
        "normalize": "robustize", "blocklist": BL, "feature_select": ["blocklist", "drop_na_columns", "variance_threshold"],
        "whiten": {"samples": "all", "epsilon": 10.0}},
    "preset bbbc021_best": "bbbc021_best",
    "plate_robustize+blocklist+spherize_all_eps100": {
        "normalize": "robustize", "blocklist": BL, "feature_select": ["blocklist", "drop_na_columns", "variance_threshold"],
        "whiten": {"samples": "all", "epsilon": 100.0}},
    "plate_robustize+blocklist+spherize_batch_dmso_eps10": {
        "normalize": "robustize", "blocklist": BL, "feature_select": ["blocklist", "drop_na_columns", "variance_threshold"],
        "whiten": {"samples": "controls", "epsilon": 10.0, "by": "Metadata_Batch"}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--map", action="store_true", help="also compute copairs mAP (slower)")
    args = ap.parse_args()
    folder = require_shared("bbbc021", "ljosa2013_per_well_mean.csv.gz").parent
    wells = read_bbbc021_wells(folder)
    warnings.filterwarnings("ignore")
    for name, recipe in RECIPES.items():
        prof = apply_recipe(wells, recipe)
        ev = evaluate(prof, with_map=args.map)
        extra = {"nscb": round(ev.nscb.accuracy, 4), "nscb_chance": round(ev.nscb.chance, 4),
                 "nsc_chance": round(ev.nsc.chance, 4), "n_features": ev.n_features,
                 "treatments_nsc": ev.nsc.n_queries, "treatments_nscb": ev.nscb.n_queries}
        if args.map:
            extra.update(map_activity=ev.map_activity, map_activity_chance=ev.map_activity_chance,
                         map_consistency=ev.map_consistency, map_consistency_chance=ev.map_consistency_chance)
        emit(f"bbbc021 NSC [{name}]", round(ev.nsc.accuracy, 4), "1-NN accuracy",
             baseline="naive z-score 0.77/0.69; Ljosa FA 0.94/0.77; target NSC>=0.90 NSCB>=0.80", **extra)


if __name__ == "__main__":
    main()
