"""What the default grouping of ``fusion train`` reports on the Ljosa BBBC021 table, beside well grouping.

The per-well table as ``benchmarks/bbbc021_fusion.py --part ljosa`` builds it (Ljosa et al. 2013 per-well
means; position features dropped; mad_robustize per plate to the DMSO wells; sparse/constant features
dropped; DMSO wells removed: 302 wells, 38 compounds, 12 MoAs). ``fusion.train.train`` with
``label="Metadata_MoA"`` and no ``group_by`` — the default grouping follows from the label, so whole
compounds are held out — on ``--seeds`` fold seeds; then once grouped by well (``--group-by
Metadata_Plate Metadata_Well``, the default before), which lets the model recognise compounds it has
seen. One JSON line each: out-of-fold well-level MoA accuracy beside the majority baseline, its
bootstrap CI, the grouping rule and the accuracy ceiling it implies.

    nice -n 10 .venv/bin/python benchmarks/bbbc021_grouping.py | tee -a benchmarks/results/bbbc021_grouping.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, require_shared  # noqa: E402
from cellfusion_core.layout import METRICS_FILE  # noqa: E402


def ljosa_moa_table() -> pd.DataFrame:
    """The normalized, annotated, DMSO-free Ljosa per-well table."""
    from benchmarks.bbbc021_fusion import _normalize
    from profiler.datasets import read_bbbc021_wells
    from cellfusion_core.names import feature_columns

    wells = read_bbbc021_wells(require_shared("bbbc021"))
    drop = [c for c in feature_columns(wells) if "Location" in c or "Center" in c or "Number" in c
            or not pd.api.types.is_numeric_dtype(wells[c])]
    prof = _normalize(wells.drop(columns=drop))
    return prof[(prof["Metadata_Compound"] != "DMSO") & prof["Metadata_MoA"].notna()].reset_index(drop=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fold seeds of the default grouping")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from fusion.train import train

    table = ljosa_moa_table()
    runs = [("default", seed, None) for seed in args.seeds] + [("well", args.seeds[0], ["Metadata_Plate", "Metadata_Well"])]
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed, group_by in runs:
            t0 = time.perf_counter()
            out = train(table, Path(tmp) / f"{name}_{seed}", label="Metadata_MoA", group_by=group_by,
                        n_splits=args.folds, seed=seed)
            m = json.loads((out / METRICS_FILE).read_text())
            acc, g = m["scores"]["accuracy"], m["grouping"]
            emit(f"bbbc021_ljosa_fusion_train_moa_accuracy_{name}_grouping", round(acc["value"], 4), "fraction",
                 round(acc["majority"], 4), baseline_kind="majority MoA", ci95=[round(v, 4) for v in acc["ci95"]],
                 seed=seed, folds=args.folds, grouping=g["rule"], group_columns=g["columns"], n_groups=g["n_groups"],
                 accuracy_ceiling=round(g["accuracy_ceiling"], 4), single_group_classes=g["single_group_classes"],
                 n_wells=m["n"], n_compounds=int(table["Metadata_Compound"].nunique()),
                 n_moas=int(table["Metadata_MoA"].nunique()), seconds=round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    main()
