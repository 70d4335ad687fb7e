"""profiler.profiles and profiler.profiles.aggregate_stream: pycytominer parity, per-plate controls, recipes, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pycytominer
import pytest

from profiler.profiles.aggregate_stream import aggregate_parquet
from cellfusion_core.errors import ConfigError, InputError
from profiler.profiles import (NEGATIVE_CONTROL_QUERY, POSITION_BLOCKLIST, PRESETS, aggregate, annotate, apply_recipe, asinh_features,
                               build_profiles, consensus, expand_blocklist, factor_analysis, feature_select, normalize,
                               select_reproducible, typical_variation_normalize)


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
    feats = [c for c in df if c.startswith("Cells_")]
    for op in ("median", "mean"):
        assert "Nuclei_Location_Center_X" not in aggregate(df, operation=op)  # position: not a phenotype
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
    assert "Nuclei_Location_Center_X" not in ours
    every = aggregate_parquet(tmp_path, operation=op, features=["Nuclei_Location_Center_X"])
    assert list(every.columns)[-1] == "Nuclei_Location_Center_X"


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
    p2 = prof["Metadata_Plate"] == "P2"
    prof.loc[p2, "Metadata_Control"] = ""
    # the one control rule (cellfusion_core.columns.control_mask): P2's DMSO wells are still controls
    normalize(prof, method="mad_robustize")
    # the marker alone, as a pycytominer query: P2 has none
    with pytest.raises(InputError, match="plate 'P2' has no control wells matching \"Metadata_Control"):
        normalize(prof, method="mad_robustize", samples=NEGATIVE_CONTROL_QUERY)
    prof.loc[p2, "Metadata_Compound"] = "X"
    with pytest.raises(InputError, match="plate 'P2' has no control wells matching the negative-control rule"):
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
    df = cells()
    prof = annotate(aggregate(df, features=[c for c in df if not c.startswith("Metadata_")]), platemap())
    assert expand_blocklist(prof.columns, [r"_Location_"]) == ["Nuclei_Location_Center_X"]
    out = feature_select(prof, operations=["blocklist"], blocklist=[r"_Location_"])
    assert "Nuclei_Location_Center_X" not in out and "Cells_AreaShape_F0" in out
    with pytest.raises(ConfigError, match="unknown feature selection"):
        feature_select(prof, operations=["magic"])


def test_position_blocklist_is_names_definition():
    cols = ["Cells_Location_Center_X", "Nuclei_AreaShape_Center_Y", "Cells_Number_Object_Number",
            "Cytoplasm_Parent_Cells", "Nuclei_Children_Cells_Count", "Cells_Neighbors_FirstClosestObjectNumber_10",
            "Cells_AreaShape_BoundingBoxMaximum_X", "Cells_AreaShape_Area", "Nuclei_Neighbors_NumberOfNeighbors_10",
            "Cells_Intensity_MeanIntensity_DNA"]
    assert expand_blocklist(cols, POSITION_BLOCKLIST) == cols[:7]


def test_single_well_plate_is_a_clear_error():
    df = cells(n=60, plates=("P1",), wells=("A01",))
    pm = platemap().iloc[:1]
    with pytest.raises(InputError, match="plate\\(s\\) P1 gave 1 well"):
        build_profiles(annotate(df, pm))


def test_typical_variation_normalize():
    rng = np.random.default_rng(3)
    n, f = 80, 5
    mix = rng.normal(size=(f, f))
    x = rng.normal(size=(n, f)) @ mix + 5
    prof = pd.DataFrame(x, columns=[f"Cells_AreaShape_F{i}" for i in range(f)])
    prof.insert(0, "Metadata_Control", np.where(np.arange(n) < 60, "negative", ""))
    prof.insert(0, "Metadata_Batch", np.where(np.arange(n) % 2, "B1", "B2"))
    feats = [c for c in prof if not c.startswith("Metadata_")]
    lw = typical_variation_normalize(prof, method="ledoit_wolf")
    ctrl = lw[lw["Metadata_Control"] == "negative"][feats].to_numpy()
    np.testing.assert_allclose(ctrl.mean(0), 0, atol=1e-9)
    from sklearn.covariance import LedoitWolf  # ZCA: x = y @ Σ_LW^(1/2) + control mean

    est = LedoitWolf().fit(x[:60])
    vals, vecs = np.linalg.eigh(est.covariance_)
    back = lw[feats].to_numpy() @ (vecs * np.sqrt(vals)) @ vecs.T + est.location_
    np.testing.assert_allclose(back, x, atol=1e-8)
    pca = typical_variation_normalize(prof, method="pca", epsilon=0.0)
    pcs = [c for c in pca if c.startswith("TVN_")]
    assert len(pcs) == f
    np.testing.assert_allclose(np.cov(pca.loc[pca["Metadata_Control"] == "negative", pcs].to_numpy().T),
                               np.eye(f), atol=1e-8)
    clipped = typical_variation_normalize(prof, method="pca", epsilon=1.0, clip=0.5)
    assert clipped[[c for c in clipped if c.startswith("TVN_")]].abs().max().max() <= 0.5
    per_batch = typical_variation_normalize(prof, method="ledoit_wolf", by="Metadata_Batch")
    assert len(per_batch) == n and list(per_batch.columns) == list(lw.columns)
    with pytest.raises(ConfigError, match="unknown typical-variation"):
        typical_variation_normalize(prof, method="magic")
    few = prof.copy()
    few["Metadata_Control"] = ""
    few.loc[0, "Metadata_Control"] = "negative"
    with pytest.raises(InputError, match="needs >= 3"):
        typical_variation_normalize(few)
    out = apply_recipe(prof, {"normalize": None, "feature_select": [], "clip": 1.0,
                              "typical_variation": {"method": "ledoit_wolf", "clip": 2.0}})
    assert out[feats].abs().max().max() <= 2.0


def treatment_wells(seed=5, reps=4):
    """Wells of 6 treatments (+ DMSO): F0 carries the treatment, F1 is replicate noise, F2 half/half."""
    rng = np.random.default_rng(seed)
    comp = np.repeat(["DMSO", "A", "A", "B", "B", "C", "C"], reps)
    conc = np.repeat([0.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0], reps)
    effect = rng.normal(0, 5, size=7)[np.repeat(np.arange(7), reps)]
    n = len(comp)
    prof = pd.DataFrame({"Metadata_Compound": comp, "Metadata_Concentration": conc,
                         "Metadata_Control": np.where(comp == "DMSO", "negative", ""),
                         "Cells_AreaShape_F0": effect + rng.normal(0, 0.1, n),
                         "Cells_AreaShape_F1": rng.normal(0, 3, n),
                         "Cells_AreaShape_F2": effect + rng.normal(0, 5, n)})
    return prof


def test_asinh_features_soft_bound():
    prof = treatment_wells()
    feats = [c for c in prof if not c.startswith("Metadata_")]
    out = asinh_features(prof, scale=2.0)
    x, y = prof[feats].to_numpy(), out[feats].to_numpy()
    np.testing.assert_allclose(y, 2.0 * np.arcsinh(x / 2.0))
    assert (np.sign(y) == np.sign(x)).all() and (np.abs(y) <= np.abs(x) + 1e-12).all()
    np.testing.assert_allclose(asinh_features(prof.assign(Cells_AreaShape_F0=1e-4), 1.0)["Cells_AreaShape_F0"],
                               1e-4, rtol=1e-8)  # linear near zero
    order = np.argsort(x[:, 0])
    assert (np.diff(y[order, 0]) >= 0).all()  # order kept (a hard clip ties the extremes)
    assert list(out.columns) == list(prof.columns)
    with pytest.raises(ConfigError, match="positive"):
        asinh_features(prof, 0.0)
    rec = apply_recipe(prof, {"normalize": None, "feature_select": [], "asinh": 2.0})
    np.testing.assert_allclose(rec[feats].to_numpy(), y)


def test_select_reproducible_keeps_features_replicates_agree_on():
    prof = treatment_wells()
    out = select_reproducible(prof, min_eta2=0.6)
    assert [c for c in out if not c.startswith("Metadata_")] == ["Cells_AreaShape_F0"]
    # eta² by hand for F2 over the non-DMSO wells
    nd = prof[prof["Metadata_Compound"] != "DMSO"]
    g = nd.groupby(["Metadata_Compound", "Metadata_Concentration"])["Cells_AreaShape_F2"]
    eta2 = 1 - ((nd["Cells_AreaShape_F2"] - g.transform("mean")) ** 2).sum() / \
        ((nd["Cells_AreaShape_F2"] - nd["Cells_AreaShape_F2"].mean()) ** 2).sum()
    kept = [c for c in select_reproducible(prof, min_eta2=eta2 - 1e-9) if not c.startswith("Metadata_")]
    assert "Cells_AreaShape_F2" in kept and "Cells_AreaShape_F1" not in kept
    assert "Cells_AreaShape_F2" not in select_reproducible(prof, min_eta2=eta2 + 1e-9)
    # controls are excluded: DMSO wells that disagree wildly do not change the choice
    noisy = prof.copy()
    noisy.loc[noisy["Metadata_Compound"] == "DMSO", "Cells_AreaShape_F1"] = [100, -100, 50, -50]
    assert list(select_reproducible(noisy, min_eta2=0.6).columns) == list(out.columns)
    rec = apply_recipe(prof, {"normalize": None, "feature_select": [], "reproducible": {"min_eta2": 0.6}})
    assert list(rec.columns) == list(out.columns)
    with pytest.raises(InputError, match="no feature reaches"):
        select_reproducible(prof.drop(columns=["Cells_AreaShape_F0", "Cells_AreaShape_F2"]), min_eta2=0.9)
    with pytest.raises(InputError, match="two or more wells"):
        select_reproducible(prof.drop_duplicates(["Metadata_Compound", "Metadata_Concentration"]))
    with pytest.raises(InputError, match="grouping columns"):
        select_reproducible(prof.drop(columns=["Metadata_Concentration"]))


def test_factor_analysis_fit_on_controls():
    rng = np.random.default_rng(7)
    n, f = 120, 6
    load = rng.normal(size=(2, f))
    x = rng.normal(size=(n, 2)) @ load + rng.normal(0, 0.1, size=(n, f))
    prof = pd.DataFrame(x, columns=[f"Cells_AreaShape_F{i}" for i in range(f)])
    prof.insert(0, "Metadata_Control", np.where(np.arange(n) < 80, "negative", ""))
    out = factor_analysis(prof, n_factors=2)
    assert [c for c in out if not c.startswith("Metadata_")] == ["FA_0001", "FA_0002"]
    from sklearn.decomposition import FactorAnalysis

    ref = FactorAnalysis(n_components=2, random_state=0).fit(x[:80])
    np.testing.assert_allclose(out[["FA_0001", "FA_0002"]].to_numpy(), ref.transform(x), atol=1e-10)
    # two latent factors: the factor scores explain the data (reconstruction error ~ the noise)
    recon = out[["FA_0001", "FA_0002"]].to_numpy() @ ref.components_ + ref.mean_
    assert np.abs(recon - x).mean() < 0.2
    fit_all = factor_analysis(prof, n_factors=2, samples="all")
    assert not np.allclose(fit_all["FA_0001"], out["FA_0001"])
    with pytest.raises(ConfigError, match="n_factors"):
        factor_analysis(prof, n_factors=7)
    rec = apply_recipe(prof, {"normalize": None, "feature_select": [], "factor_analysis": {"n_factors": 2}})
    np.testing.assert_allclose(rec[["FA_0001", "FA_0002"]].to_numpy(), out[["FA_0001", "FA_0002"]].to_numpy())


def test_build_profiles_default_and_preset():
    sc = annotate(cells(), platemap())
    out = build_profiles(sc)
    assert len(out) == 8 and "Metadata_Compound" in out
    with pytest.raises(InputError, match="Metadata_Batch.*2 plates"):   # the preset pools the spread per batch
        build_profiles(sc, recipe="bbbc021_best")
    sc["Metadata_Batch"] = "Week1"
    best = build_profiles(sc, recipe="bbbc021_best")
    assert "Nuclei_Location_Center_X" not in best and len(best) == 8
    assert sum(c.endswith("_TVN_0001") for c in best) == 21   # 7 bounds × 3 whitening strengths
    assert np.isfinite(best[[c for c in best if not c.startswith("Metadata_")]].to_numpy()).all()
    with pytest.raises(ConfigError, match="unknown profile preset"):
        apply_recipe(out, "nope")
    assert set(PRESETS) >= {"default", "bbbc021_best"}


def test_consensus_per_treatment():
    prof = normalize(annotate(aggregate(cells()), platemap()), method="standardize")
    cons = consensus(prof, replicate_columns=["Metadata_Compound"])
    assert sorted(cons["Metadata_Compound"]) == ["DMSO", "X", "Y"]


def well_table(seed=0, plates_per_batch=3, batches=("W1", "W2", "W3"), n_ctrl=8, n_trt=6, f=6,
               plate_shift=0.0, batch_scale=(1.0, 1.0, 1.0)):
    """Per-well table: per plate n_ctrl DMSO + n_trt treated wells; optional plate location shifts
    and batch spread factors."""
    rng = np.random.default_rng(seed)
    rows = []
    for b, s in zip(batches, batch_scale):
        for p in range(plates_per_batch):
            shift = rng.normal(0, plate_shift, f)
            for i in range(n_ctrl + n_trt):
                ctrl = i < n_ctrl
                rows.append({"Metadata_Batch": b, "Metadata_Plate": f"{b}_P{p}", "Metadata_Well": f"W{i:02d}",
                             "Metadata_Compound": "DMSO" if ctrl else f"C{i % 3}", "Metadata_Concentration": 1.0,
                             "Metadata_Control": "negative" if ctrl else "",
                             **{f"Cells_AreaShape_F{j}": shift[j] + s * rng.normal() + (0 if ctrl else 2 * (i % 3 == j))
                                for j in range(f)}})
    return pd.DataFrame(rows)


def test_normalize_scale_by_plate_equals_pycytominer_and_pools_the_spread():
    prof = well_table()
    feats = [c for c in prof if c.startswith("Cells_")]
    for method in ("standardize", "robustize", "mad_robustize"):
        ref = normalize(prof, method=method)
        ours = normalize(prof, method=method, scale_by="Metadata_Plate")
        np.testing.assert_allclose(ours[feats].to_numpy(), ref[feats].to_numpy(), rtol=1e-9, atol=1e-9)
    # by hand: centre on each plate's control median, divide by the IQR of the batch's centred controls
    x = prof[feats].to_numpy(float).copy()
    ctrl = (prof["Metadata_Control"] == "negative").to_numpy()
    for p in prof["Metadata_Plate"].unique():
        m = (prof["Metadata_Plate"] == p).to_numpy()
        x[m] -= np.median(x[m & ctrl], axis=0)
    for b in prof["Metadata_Batch"].unique():
        m = (prof["Metadata_Batch"] == b).to_numpy()
        q1, q3 = np.percentile(x[m & ctrl], [25, 75], axis=0)
        x[m] /= q3 - q1
    ours = normalize(prof, method="robustize", scale_by="Metadata_Batch")
    np.testing.assert_allclose(ours[feats].to_numpy(), x, rtol=1e-12)
    assert not np.allclose(ours[feats].to_numpy(), normalize(prof, method="robustize")[feats].to_numpy())
    whole = normalize(prof, method="standardize", scale_by="all")
    centred = whole.loc[whole["Metadata_Control"] == "negative", feats]
    np.testing.assert_allclose(centred.std(ddof=0).to_numpy(), 1.0, rtol=1e-12)
    # recipe route
    rec = apply_recipe(prof, {"normalize": "robustize", "normalize_params": {"scale_by": "Metadata_Batch"},
                              "feature_select": []})
    np.testing.assert_allclose(rec[feats].to_numpy(), x, rtol=1e-12)


def test_normalize_scale_by_missing_column():
    prof = well_table().drop(columns="Metadata_Batch")
    with pytest.raises(InputError, match="no such column.*9 plates"):
        normalize(prof, method="robustize", scale_by="Metadata_Batch")
    one = prof[prof["Metadata_Plate"] == "W1_P0"]
    feats = [c for c in prof if c.startswith("Cells_")]
    np.testing.assert_allclose(normalize(one, method="robustize", scale_by="Metadata_Batch")[feats].to_numpy(),
                               normalize(one, method="robustize")[feats].to_numpy(), rtol=1e-12)
    with pytest.raises(ConfigError, match="spherize"):
        normalize(well_table(), method="spherize", scale_by="Metadata_Batch")


def test_control_variation_levels_finds_the_planted_levels():
    from profiler.profiles import control_variation_levels

    planted = control_variation_levels(well_table(seed=1, plate_shift=3.0, batch_scale=(0.5, 1.0, 2.5)),
                                       n_permutations=30)
    assert planted["location_plates_within_batch"]["median_ratio"] > 3
    assert planted["spread_between_batches"]["median_ratio"] > 3
    assert planted["spread_plates_within_batch"]["median_ratio"] < 2
    null = control_variation_levels(well_table(seed=2), n_permutations=30)
    assert all(v["median_ratio"] < 2 for v in null.values())
    with pytest.raises(InputError, match="two batches"):
        control_variation_levels(well_table(batches=("W1",), batch_scale=(1.0,)))


def test_bound_ensemble_averages_cosines_over_the_grid():
    from profiler.profiles import bound_ensemble, clip_features

    prof = normalize(well_table(seed=4, n_ctrl=12), method="robustize")
    ens = bound_ensemble(prof, clip=(1.0, None), epsilon=(0.1, 1.0))
    blocks = sorted({c.split("_")[0] for c in ens if c.startswith("B")})
    assert blocks == ["B01", "B02", "B03", "B04"]
    x = ens[[c for c in ens if c.startswith("B")]].to_numpy()
    cos = x @ x.T
    per_block = []
    for b in blocks:
        y = ens[[c for c in ens if c.startswith(b + "_")]].to_numpy()
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-12)
        per_block.append(y @ y.T)
    np.testing.assert_allclose(cos / len(blocks), np.mean(per_block, axis=0), atol=1e-12)
    # block 2 = clip 1 then TVN eps 1, unit length per well
    ref = typical_variation_normalize(clip_features(prof, 1.0), method="pca", epsilon=1.0)
    r = ref[[c for c in ref if c.startswith("TVN_")]].to_numpy()
    np.testing.assert_allclose(ens[[c for c in ens if c.startswith("B02_")]].to_numpy(),
                               r / np.linalg.norm(r, axis=1, keepdims=True), rtol=1e-10)
    via = apply_recipe(well_table(seed=4, n_ctrl=12), {"normalize": "robustize", "feature_select": [],
                                                       "bound_ensemble": {"clip": [1.0, None], "epsilon": [0.1, 1.0]}})
    np.testing.assert_allclose(via[list(ens.columns[-x.shape[1]:])].to_numpy(), x, rtol=1e-12)
    with pytest.raises(ConfigError, match="replaces"):
        apply_recipe(prof, {"normalize": None, "clip": 3, "bound_ensemble": {"clip": [2]}})
    with pytest.raises(ConfigError, match="positive"):
        bound_ensemble(prof, clip=(0,))


def test_cli_evaluate_levels(tmp_path):
    from typer.testing import CliRunner

    from profiler.cli import app

    prof = well_table(seed=1, plate_shift=3.0, batch_scale=(0.5, 1.0, 2.5))
    prof["Metadata_MoA"] = prof["Metadata_Compound"].map(lambda c: "control" if c == "DMSO" else f"M{c}")
    path = tmp_path / "profiles.parquet"
    prof.to_parquet(path)
    res = CliRunner().invoke(app, ["evaluate", str(path), "--levels", "--no-map", "--preset", "default"])
    assert res.exit_code == 0, res.output
    assert "over 6 features" in res.output
    ratio = {line.split()[0]: float(line.split("median ratio ")[1].split(",")[0])
             for line in res.output.splitlines() if "median ratio" in line}
    assert ratio["location_plates_within_batch"] > 3 and ratio["spread_between_batches"] > 3
    assert ratio["spread_plates_within_batch"] < 2 and "NSC" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(path), "--levels", "--control", "PBS"])
    assert isinstance(res.exception, ConfigError) and "neither a value" in str(res.exception)  # no PBS wells
    res = CliRunner().invoke(app, ["evaluate", str(path), "--levels", "--control", "Metadata_Compound == 'PBS'"])
    assert isinstance(res.exception, InputError) and "no control wells" in str(res.exception)
    prof.loc[0, "Cells_AreaShape_F0"] = np.nan      # not finite in every control: left out of the levels
    prof.to_parquet(path)                           # (the evaluation itself then refuses the NaN)
    res = CliRunner().invoke(app, ["evaluate", str(path), "--levels", "--no-map"])
    assert "over 5 features" in res.output
    assert isinstance(res.exception, InputError) and "NaN" in str(res.exception)
