"""profiler.profiles and profiler.aggregate_stream: pycytominer parity, per-plate controls, recipes, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pycytominer
import pytest

from profiler.aggregate_stream import aggregate_parquet
from profiler.errors import ConfigError, InputError
from profiler.profiles import (PRESETS, aggregate, annotate, apply_recipe, build_profiles, consensus,
                               expand_blocklist, feature_select, normalize)


def cells(seed=0, n=600, plates=("P1", "P2"), wells=("A01", "A02", "B01", "B02")):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"Metadata_Plate": rng.choice(plates, n), "Metadata_Well": rng.choice(wells, n),
                       "Metadata_ObjectNumber": np.arange(1, n + 1)})
    for i in range(6):
        df[f"Cells_AreaShape_F{i}"] = rng.normal(i, 1 + i, n).astype("float32")
    df["Nuclei_Location_Center_X"] = rng.uniform(0, 100, n)
    df.loc[::11, "Cells_AreaShape_F2"] = np.nan
    return df


def platemap():
    return pd.DataFrame({"Metadata_Well": ["A01", "A02", "B01", "B02"],
                         "Metadata_Compound": ["DMSO", "DMSO", "X", "Y"],
                         "Metadata_Control": ["negative", "negative", "", ""]})


def test_aggregate_equals_pycytominer_median_and_mean():
    df = cells()
    feats = [c for c in df if not c.startswith("Metadata_")]
    for op in ("median", "mean"):
        ours = aggregate(df, operation=op).sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
        ref = pycytominer.aggregate(df, strata=["Metadata_Plate", "Metadata_Well"], features=feats, operation=op,
                                    output_type=None).sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
        np.testing.assert_allclose(ours[feats].to_numpy(float), ref[feats].to_numpy(float), rtol=1e-6)
        assert ours["Metadata_Object_Count"].sum() == len(df)


@pytest.mark.parametrize("op", ["median", "mean"])
def test_streaming_aggregate_equals_pycytominer(tmp_path, op):
    df = cells(1, n=999)
    # split over two files, tiny memory budget → one feature per pass
    df.iloc[:400].to_parquet(tmp_path / "a.parquet")
    df.iloc[400:].to_parquet(tmp_path / "b.parquet")
    ours = aggregate_parquet(tmp_path, operation=op, memory_mb=0.001)
    ref = aggregate(df, operation=op).sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    feats = [c for c in ref if not c.startswith("Metadata_")]
    assert list(ours["Metadata_Well"]) == list(ref["Metadata_Well"])
    np.testing.assert_allclose(ours[feats].to_numpy(float), ref[feats].to_numpy(float), rtol=1e-6)
    assert list(ours["Metadata_Object_Count"]) == list(ref["Metadata_Object_Count"])


def test_streaming_aggregate_rejects_text_features(tmp_path):
    df = cells(n=20)
    df["Cells_Bad"] = "x"
    df.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(InputError, match="non-numeric feature columns"):
        aggregate_parquet(tmp_path / "c.parquet")


def test_normalize_to_controls_per_plate():
    prof = annotate(aggregate(cells()), platemap())
    out = normalize(prof, method="standardize")
    for _, plate in out.groupby("Metadata_Plate"):
        ctrl = plate[plate["Metadata_Control"] == "negative"]
        np.testing.assert_allclose(ctrl["Cells_AreaShape_F0"].mean(), 0, atol=1e-9)


def test_plate_without_controls_names_the_plate_unless_all():
    prof = annotate(aggregate(cells()), platemap())
    prof.loc[prof["Metadata_Plate"] == "P2", "Metadata_Control"] = ""
    with pytest.raises(InputError, match="plate 'P2' has no control wells"):
        normalize(prof, method="mad_robustize")
    out = normalize(prof, method="mad_robustize", samples="all")
    assert len(out) == len(prof)


def test_annotate_bad_wells():
    agg = aggregate(cells())
    with pytest.raises(InputError, match="missing from the platemap: .*B02"):
        annotate(agg, platemap().iloc[:3])
    pm = pd.concat([platemap(), pd.DataFrame({"Metadata_Well": ["H12"], "Metadata_Compound": ["Z"],
                                              "Metadata_Control": [""]})])
    with pytest.raises(InputError, match="platemap wells have no cells/images: H12"):
        annotate(agg, pm)
    assert len(annotate(agg, pm, allow_unimaged_wells=True)) == len(agg)


def test_bad_features():
    df = cells(n=50)
    df.loc[3, "Cells_AreaShape_F0"] = np.inf
    with pytest.raises(InputError, match="infinite values"):
        aggregate(df)
    df = cells(n=50)
    df["Cells_Text"] = "a"
    with pytest.raises(InputError, match="non-numeric feature columns"):
        aggregate(df)
    with pytest.raises(ConfigError):
        aggregate(cells(n=50), operation="mode")


def test_feature_select_blocklist_patterns_and_ops():
    prof = annotate(aggregate(cells()), platemap())
    assert expand_blocklist(prof.columns, [r"_Location_"]) == ["Nuclei_Location_Center_X"]
    out = feature_select(prof, operations=["blocklist"], blocklist=[r"_Location_"])
    assert "Nuclei_Location_Center_X" not in out and "Cells_AreaShape_F0" in out
    with pytest.raises(ConfigError, match="unknown feature selection"):
        feature_select(prof, operations=["magic"])


def test_build_profiles_default_and_preset():
    sc = annotate(cells(), platemap())
    out = build_profiles(sc)
    assert len(out) == 8 and "Metadata_Compound" in out
    best = build_profiles(sc, recipe="bbbc021_best")
    assert "Nuclei_Location_Center_X" not in best and len(best) == 8
    assert np.isfinite(best[[c for c in best if not c.startswith("Metadata_")]].to_numpy()).all()
    with pytest.raises(ConfigError, match="unknown profile preset"):
        apply_recipe(out, "nope")
    assert set(PRESETS) >= {"default", "bbbc021_best"}


def test_consensus_per_treatment():
    prof = normalize(annotate(aggregate(cells()), platemap()), method="standardize")
    cons = consensus(prof, replicate_columns=["Metadata_Compound"])
    assert sorted(cons["Metadata_Compound"]) == ["DMSO", "X", "Y"]
