"""profiler.evaluate: NSC/NSCB protocol on hand-made profiles, mAP with copairs, BBBC021 reference point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import require_shared
from cellfusion_core.errors import InputError
from profiler.evaluate import evaluate, nsc_nscb, treatment_profiles


def table():
    # 4 compounds × 2 wells, two MoAs with orthogonal signatures; + DMSO wells
    rows = []
    sig = {"M1": np.array([1.0, 0, 0]), "M2": np.array([0, 1.0, 0])}
    spec = [("a", "M1", "W1"), ("b", "M1", "W2"), ("c", "M2", "W1"), ("d", "M2", "W2")]
    rng = np.random.default_rng(0)
    for comp, moa, batch in spec:
        for rep in range(2):
            v = sig[moa] + rng.normal(0, 0.05, 3)
            rows.append({"Metadata_Compound": comp, "Metadata_Concentration": 1.0, "Metadata_MoA": moa,
                         "Metadata_Batch": batch, "Metadata_Control": "", "f1": v[0], "f2": v[1], "f3": v[2]})
    for rep in range(4):
        v = rng.normal(0, 0.05, 3)
        rows.append({"Metadata_Compound": "DMSO", "Metadata_Concentration": 0.0, "Metadata_MoA": "DMSO",
                     "Metadata_Batch": "W1" if rep < 2 else "W2", "Metadata_Control": "negative",
                     "f1": v[0], "f2": v[1], "f3": v[2]})
    return pd.DataFrame(rows)


def test_nsc_nscb_perfect_and_chance():
    t = treatment_profiles(table())
    nsc, nscb = nsc_nscb(t)
    assert nsc.n_queries == 4 and nsc.accuracy == 1.0
    assert nsc.chance == pytest.approx(1 / 3)       # 3 other compounds, 1 of them same MoA
    assert nscb.accuracy == 1.0 and nscb.chance == pytest.approx(1 / 2)


def test_nscb_drops_moa_in_one_batch_and_nn_can_fail():
    df = table()
    df.loc[df["Metadata_Compound"] == "b", "Metadata_Batch"] = "W1"   # M1 now lives in one batch only
    nsc, nscb = nsc_nscb(treatment_profiles(df))
    assert nscb.dropped_moas == ["M1"] and nscb.n_queries == 2
    # swap the signature of one compound: its nearest neighbour now has the other MoA
    df = table()
    df.loc[df["Metadata_Compound"] == "a", ["f1", "f2"]] = df.loc[df["Metadata_Compound"] == "a", ["f2", "f1"]].to_numpy()
    nsc, _ = nsc_nscb(treatment_profiles(df))
    assert nsc.accuracy == 0.0   # every nearest other compound now carries the other MoA


def test_evaluate_map_and_bad_input():
    ev = evaluate(table(), null_size=200)
    assert ev.map_consistency == pytest.approx(1.0)
    assert ev.map_activity > ev.map_activity_chance
    assert any("chance" in line for line in ev.lines())
    bad = table()
    bad.loc[0, "f1"] = np.nan
    with pytest.raises(InputError, match="NaN/inf"):
        evaluate(bad)


def test_bbbc021_naive_zscore_reference():
    folder = require_shared("bbbc021")
    from profiler.datasets import read_bbbc021_wells
    from profiler.profiles import apply_recipe

    wells = read_bbbc021_wells(folder)
    assert len(wells) == 632
    prof = apply_recipe(wells, {"normalize": "standardize", "feature_select": ["drop_na_columns"]})
    ev = evaluate(prof, with_map=False)
    assert ev.nscb.n_queries == 92 and ev.nsc.n_queries == 103
    assert ev.nsc.accuracy == pytest.approx(0.77, abs=0.02)
    assert ev.nscb.accuracy == pytest.approx(0.69, abs=0.02)


def test_bbbc021_preset_meets_the_target():
    """The preset (levels from the DMSO wells, mean cosine over bound × whitening settings) keeps
    NSC ≥ 0.90 and NSCB ≥ 0.80 on the Ljosa table (measured 0.922 / 0.848; benchmarks/bbbc021_profiles.py)."""
    folder = require_shared("bbbc021")
    from profiler.datasets import read_bbbc021_wells
    from profiler.profiles import apply_recipe

    ev = evaluate(apply_recipe(read_bbbc021_wells(folder), "bbbc021_best"), with_map=False)
    assert ev.nsc.n_queries == 103 and ev.nscb.n_queries == 92
    assert ev.nsc.accuracy >= 0.90 and ev.nscb.accuracy >= 0.80, (ev.nsc.accuracy, ev.nscb.accuracy)


def test_replicate_map_is_label_free_and_rewards_reproducible_replicates():
    from profiler.evaluate import replicate_map

    rng = np.random.default_rng(0)
    rows = []
    for c in range(6):
        centre = rng.normal(size=8)
        for r in range(3):
            rows.append({"Metadata_Compound": f"C{c}", "Metadata_Concentration": 1.0, "centre": centre})
    for r in range(6):
        rows.append({"Metadata_Compound": "DMSO", "Metadata_Concentration": 0.0, "centre": np.zeros(8)})
    meta = pd.DataFrame(rows)
    noise = rng.normal(size=(len(meta), 8))
    centres = np.stack(meta.pop("centre"))
    tight = pd.concat([meta, pd.DataFrame(centres + 0.05 * noise, columns=[f"Cells_F{i}" for i in range(8)])], axis=1)
    loose = pd.concat([meta, pd.DataFrame(centres + 3.0 * noise, columns=[f"Cells_F{i}" for i in range(8)])], axis=1)
    assert "Metadata_MoA" not in tight
    assert replicate_map(tight) > 0.95 > replicate_map(loose)
