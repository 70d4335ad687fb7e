"""BBBC021 (Ljosa 2013 per-well means): NSC / NSCB and a label-free score for every recipe tried.

Every recipe is printed (honest reporting). MoA labels are used only to score NSC/NSCB, never to
choose: the recipe is chosen by a label-free criterion fixed beforehand — replicate mAP
(profiler.evaluate.replicate_map: copairs mAP of retrieving a well's replicate wells, same
compound + concentration, among all other wells incl. DMSO). The recipe with the highest replicate
mAP among the eligible ones is marked `label_free_pick` and is the preset `bbbc021_best`.

Eligibility (fixed a priori, not from scores): recipes that fit a transform separately per batch
are printed but not eligible, because every treatment's replicate wells sit in one batch — a
per-batch fit is tuned to exactly the within-batch similarity the criterion measures, so the
criterion cannot judge it.

    python benchmarks/bbbc021_profiles.py [--map]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, require_shared  # noqa: E402
from profiler.evaluate import evaluate, replicate_map  # noqa: E402
from profiler.ingest import read_bbbc021_wells  # noqa: E402
from profiler.profiles import POSITION_BLOCKLIST, PRESETS, apply_recipe, resolve_recipe  # noqa: E402

BL = list(POSITION_BLOCKLIST)
SEL = ["blocklist", "drop_na_columns"]
SELV = SEL + ["variance_threshold"]
RECIPES = {
    "naive_plate_standardize": {"normalize": "standardize", "feature_select": ["drop_na_columns"]},
    "plate_robustize": {"normalize": "robustize", "feature_select": ["drop_na_columns"]},
    "plate_mad_robustize": {"normalize": "mad_robustize", "feature_select": ["drop_na_columns"]},
    "plate_robustize+blocklist": {"normalize": "robustize", "blocklist": BL, "feature_select": SEL},
    "plate_robustize+blocklist+var+corr0.9": {"normalize": "robustize", "blocklist": BL,
                                              "feature_select": SELV + ["correlation_threshold"]},
    "plate_robustize+blocklist+spherize_dmso_eps1e-6": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SELV,
        "whiten": {"samples": "controls", "epsilon": 1e-6}},
    "plate_robustize+blocklist+spherize_dmso_eps10": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SELV,
        "whiten": {"samples": "controls", "epsilon": 10.0}},
    "plate_robustize+blocklist+spherize_all_eps1": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SELV, "whiten": {"samples": "all", "epsilon": 1.0}},
    "plate_robustize+blocklist+spherize_all_eps10": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SELV, "whiten": {"samples": "all", "epsilon": 10.0}},
    "plate_robustize+blocklist+spherize_all_eps100": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SELV, "whiten": {"samples": "all", "epsilon": 100.0}},
    "plate_robustize+blocklist+spherize_batch_dmso_eps10": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SELV,
        "whiten": {"samples": "controls", "epsilon": 10.0, "by": "Metadata_Batch"}},
    "plate_standardize+blocklist+clip3": {"normalize": "standardize", "blocklist": BL, "feature_select": SEL, "clip": 3},
    "plate_mad_robustize+blocklist+clip3": {"normalize": "mad_robustize", "blocklist": BL, "feature_select": SEL,
                                            "clip": 3},
    "plate_robustize+blocklist+clip3": {"normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3},
    "plate_robustize+blocklist+clip3+LW_dmso": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3,
        "typical_variation": {"method": "ledoit_wolf"}},
    "plate_robustize+blocklist+clip3+LW_dmso+clip3": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3,
        "typical_variation": {"method": "ledoit_wolf", "clip": 3}},
    "plate_robustize+blocklist+clip3+LW_batch_dmso": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3,
        "typical_variation": {"method": "ledoit_wolf", "by": "Metadata_Batch"}},
    "plate_robustize+blocklist+clip3+TVN_pca_eps0.1": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3,
        "typical_variation": {"method": "pca", "epsilon": 0.1}},
    "plate_robustize+blocklist+clip3+TVN_pca_eps1": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3,
        "typical_variation": {"method": "pca", "epsilon": 1.0}},
    "plate_robustize+blocklist+clip3+TVN_pca_eps1+clip3": {
        "normalize": "robustize", "blocklist": BL, "feature_select": SEL, "clip": 3,
        "typical_variation": {"method": "pca", "epsilon": 1.0, "clip": 3}},
}


def eligible(recipe: dict) -> bool:
    """Per-batch fits are not eligible (see the module docstring)."""
    return not any((recipe.get(k) or {}).get("by") for k in ("whiten", "typical_variation"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--map", action="store_true", help="also compute copairs mAP activity/consistency (slower)")
    args = ap.parse_args()
    folder = require_shared("bbbc021", "ljosa2013_per_well_mean.csv.gz").parent
    wells = read_bbbc021_wells(folder)
    warnings.filterwarnings("ignore")
    rows = []
    for name, recipe in RECIPES.items():
        prof = apply_recipe(wells, recipe)
        ev = evaluate(prof, with_map=args.map)
        rows.append((name, recipe, prof, ev, replicate_map(prof)))
    pick = max((r for r in rows if eligible(r[1])), key=lambda r: r[4])[0]
    for name, recipe, prof, ev, rep in rows:
        extra = {"nscb": round(ev.nscb.accuracy, 4), "nscb_chance": round(ev.nscb.chance, 4),
                 "nsc_chance": round(ev.nsc.chance, 4), "replicate_map": round(rep, 4),
                 "eligible": eligible(recipe), "label_free_pick": name == pick, "n_features": ev.n_features,
                 "treatments_nsc": ev.nsc.n_queries, "treatments_nscb": ev.nscb.n_queries}
        if args.map:
            extra.update(map_activity=ev.map_activity, map_activity_chance=ev.map_activity_chance,
                         map_consistency=ev.map_consistency, map_consistency_chance=ev.map_consistency_chance)
        emit(f"bbbc021 NSC [{name}]", round(ev.nsc.accuracy, 4), "1-NN accuracy",
             baseline="naive z-score 0.77/0.69; Ljosa FA 0.94/0.77; target NSC>=0.90 NSCB>=0.80", **extra)
    preset = resolve_recipe("bbbc021_best")
    preset.pop("aggregate", None)
    picked = dict(RECIPES[pick])
    emit("bbbc021 label-free pick", pick, "recipe", baseline="max replicate mAP among eligible recipes",
         preset_bbbc021_best_matches_pick=preset == picked, preset=PRESETS["bbbc021_best"])


if __name__ == "__main__":
    main()
