"""profiler.outliers: the per-cell outlier model (analytic cases) and its place in profiler extract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellfusion_core.errors import ConfigError, ModelFileError
from profiler.outliers import (OutlierModel, OutlierTally, control_wells, fit_outlier_model, outlier_params,
                               sample_partitions, score_cells, well_outlier_scores)


def _cells(n=400, p=12, seed=0):
    mix = np.random.default_rng(99).normal(size=(p, p)) * 0.4 + np.eye(p)   # correlated features, one law
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) @ mix
    return pd.DataFrame(x, columns=[f"Cells_Intensity_F{j:02d}_DNA" for j in range(p)])


def test_planted_far_point_scores_highest_and_is_flagged():
    ctrl = _cells()
    model = fit_outlier_model(ctrl, contamination=0.02, n_components=4)
    test = _cells(50, seed=1)
    far = test.iloc[[0]].copy() + 25.0                   # far along every feature
    off_axis = test.iloc[[1]].copy()
    off_axis.iloc[0, 7] += 60.0                          # far along one feature only (orthogonal distance)
    s, flag = score_cells(model, pd.concat([test, far, off_axis], ignore_index=True))
    assert s[-2] == s.max() and flag[-2] and flag[-1]
    assert s[-1] > np.quantile(s[:-2], 0.95)
    assert flag[:-2].mean() < 0.15                       # fresh control-like cells: about `contamination`
    # the threshold is the (1 - contamination) quantile of the control cells' scores
    s_ctrl, f_ctrl = score_cells(model, ctrl)
    assert f_ctrl.mean() == pytest.approx(0.02, abs=0.006)


def test_scores_invariant_to_per_feature_affine_rescaling():
    ctrl, test = _cells(), _cells(60, seed=3)
    rng = np.random.default_rng(5)
    a = rng.uniform(0.01, 100, ctrl.shape[1]) * rng.choice([-1, 1], ctrl.shape[1])
    b = rng.normal(0, 1000, ctrl.shape[1])
    s1, _ = score_cells(fit_outlier_model(ctrl, n_components=4), test)
    s2, _ = score_cells(fit_outlier_model(ctrl * a + b, n_components=4), test * a + b)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_nan_features_are_imputed_with_the_control_median():
    ctrl = _cells()
    model = fit_outlier_model(ctrl, n_components=4)
    med = ctrl.median()
    row = ctrl.iloc[[0]].copy()
    row_nan = row.copy()
    row_nan.iloc[0, 3] = np.nan
    row_med = row.copy()
    row_med.iloc[0, 3] = med.iloc[3]
    assert score_cells(model, row_nan)[0][0] == pytest.approx(score_cells(model, row_med)[0][0])
    # a column the table lacks entirely is imputed too
    assert np.isfinite(score_cells(model, row.drop(columns=[row.columns[5]]))[0]).all()


def test_constant_and_position_features_are_left_out():
    ctrl = _cells()
    ctrl["Cells_AreaShape_Zero"] = 0.0
    ctrl["Cells_Location_Center_X"] = np.arange(len(ctrl), dtype=float)
    ctrl["Metadata_Site"] = 1
    model = fit_outlier_model(ctrl, n_components=4)
    assert "Cells_AreaShape_Zero" in model.dropped
    assert not {"Cells_AreaShape_Zero", "Cells_Location_Center_X", "Metadata_Site"} & set(model.features)


def test_model_json_round_trip_scores_identically(tmp_path):
    ctrl = _cells()
    model = fit_outlier_model(ctrl, n_components=4)
    path = tmp_path / "outliers.json"
    path.write_text(json.dumps(model.to_dict()))
    back = OutlierModel.from_dict(json.loads(path.read_text()))
    np.testing.assert_array_equal(score_cells(model, ctrl)[0], score_cells(back, ctrl)[0])
    bad = model.to_dict()
    del bad["precision"]
    with pytest.raises(ModelFileError):
        OutlierModel.from_dict(bad)


def test_fit_is_robust_to_contaminated_controls():
    ctrl = _cells(500)
    dirty = ctrl.copy()
    dirty.iloc[:25] += 30.0                               # 5 % gross outliers among the controls
    model = fit_outlier_model(dirty, contamination=0.05, n_components=4)
    s, flag = score_cells(model, dirty)
    assert flag[:25].all()
    assert flag[25:].mean() < 0.01


def test_params_validation():
    assert outlier_params(None)["enabled"] is True
    assert outlier_params({"remove": False}, remove=True)["remove"] is True
    for bad in ({"contamination": 0.7}, {"contamination": "x"}, {"enabled": "yes"}, {"n_components": 0},
                {"contaminaton": 0.1}, {"enabled": False, "remove": True}):
        with pytest.raises(ConfigError):
            outlier_params(bad)


def test_sample_partitions_bounded_seeded_and_filtered(tmp_path):
    paths = []
    for i in range(4):
        df = _cells(100, seed=i)
        df.insert(0, "Metadata_Well", ["B02", "B03"] * 50)
        paths.append(tmp_path / f"s{i}.parquet")
        df.to_parquet(paths[-1])
    feats = list(_cells(1).columns)
    s1 = sample_partitions(paths, feats, wells={"B02"}, max_cells=120, seed=0)
    s2 = sample_partitions(paths, feats, wells={"B02"}, max_cells=120, seed=0)
    assert len(s1) == 120
    pd.testing.assert_frame_equal(s1, s2)
    assert len(sample_partitions(paths, feats, wells={"B02"}, max_cells=1000)) == 200
    assert len(sample_partitions(paths, feats, wells=None, max_cells=1000)) == 400


def test_control_wells_and_tally():
    pm = pd.DataFrame({"Metadata_Well": ["B02", "B03", "B04"], "Metadata_Compound": ["DMSO", "X", "Y"],
                       "Metadata_Control": ["negative", "", ""]})
    assert control_wells(pm) == {"B02"}
    assert control_wells(None) is None
    t = OutlierTally()
    cells = pd.DataFrame({"Metadata_Plate": ["P"] * 4, "Metadata_Well": ["B02", "B02", "B03", "B03"]})
    t.add(cells, np.array([True, False, False, False]))
    fr = t.fractions().set_index("Metadata_Well")["Metadata_Outlier_Fraction"]
    assert fr["B02"] == 0.5 and fr["B03"] == 0.0 and t.flagged == 1


def test_well_outlier_score_marks_the_odd_well():
    rng = np.random.default_rng(0)
    prof = pd.DataFrame(rng.normal(size=(10, 20)), columns=[f"Cells_X_F{j}" for j in range(20)])
    prof.iloc[9] += 8.0
    ctrl = np.array([True] * 6 + [False] * 4)
    s = well_outlier_scores(prof, ctrl)
    assert s.argmax() == 9 and s[9] > 3 * np.median(s[:6])


# ---------------------------------------------------------------------------------------------
# profiler extract on a synthetic plate with planted defects

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from profiler.extract import extract
    from profiler.synthetic import make_example_plate

    root = tmp_path_factory.mktemp("planted")
    plate = make_example_plate(root / "plate", n_wells=8, n_sites=1, size=256, seed=0, defects=0.3)
    out = extract(plate, root / "out", workers=0, progress=False)
    return plate, out


def test_planted_defects_are_in_the_ground_truth(planted):
    import tifffile

    plate, _ = planted
    d = pd.read_csv(plate / "ground_truth" / "defects.csv", dtype={"well": str})
    assert set(d["kind"]) == {"debris", "blurred", "merged"}
    for r in d.itertuples():
        nuc = tifffile.imread(plate / "ground_truth" / f"{r.plate}_{r.well}_s{r.site}_nuclei.tif")
        assert (nuc == r.label).any()


def test_extract_writes_scores_flags_model_and_well_columns(planted):
    from cellfusion_core.io import read_manifest
    from profiler.outliers import load_model

    _, out = planted
    sc = pd.read_parquet(out / "single_cell.parquet")
    assert sc["Metadata_Outlier_Score"].dtype == np.float64 and sc["Metadata_Outlier"].dtype == bool
    assert np.isfinite(sc["Metadata_Outlier_Score"]).all()
    model = load_model(out / "outliers.json")
    assert model.fit_on == "control wells"
    ctrl = sc["Metadata_Control"].eq("negative")
    assert model.n_fit == int(ctrl.sum())             # the plate's few control cells are all sampled
    np.testing.assert_array_equal(sc["Metadata_Outlier"], sc["Metadata_Outlier_Score"] > model.threshold)
    facts = read_manifest(out)["outliers"]
    assert facts["flagged"] == int(sc["Metadata_Outlier"].sum()) and facts["fit_on"] == "control wells"
    prof = pd.read_parquet(out / "profiles.parquet")
    frac = sc.groupby("Metadata_Well")["Metadata_Outlier"].mean()
    np.testing.assert_allclose(prof.set_index("Metadata_Well")["Metadata_Outlier_Fraction"].loc[frac.index], frac)
    assert np.isfinite(prof["Metadata_Outlier_Well_Score"]).all()


def test_planted_outliers_score_far_above_random(planted):
    """Defective cells (truth from the label images) outrank clean ones: a random score fails this."""
    from sklearn.metrics import roc_auc_score

    from profiler.synthetic import defect_truth

    plate, out = planted
    sc = pd.read_parquet(out / "single_cell.parquet")
    kinds = defect_truth(sc, plate)
    m = kinds != "unmatched"
    assert m.mean() > 0.9
    bad = (kinds[m] != "clean")
    score = sc["Metadata_Outlier_Score"].to_numpy()[m]
    assert 0.15 < bad.mean() < 0.45
    assert roc_auc_score(bad, score) > 0.75          # random: 0.5 ± 0.06 on these ~100 cells
    top = np.argsort(-score)[: int(bad.sum())]
    assert bad[top].mean() > 1.8 * bad.mean()          # precision of the top-k flags vs the random baseline
    for kind in ("debris", "merged"):
        sel = (kinds[m] == kind) | ~bad
        assert roc_auc_score(kinds[m][sel] == kind, score[sel]) > 0.8


def test_remove_outliers_leaves_flagged_cells_out_of_the_profiles(planted, tmp_path):
    import shutil

    from profiler.extract import extract
    from cellfusion_core.io import read_manifest

    plate, out = planted
    out2 = tmp_path / "out"
    shutil.copytree(out / "sites", out2 / "sites")       # the same sites: only the merge reruns
    extract(plate, out2, workers=0, progress=False, remove_outliers=True)
    assert read_manifest(out2)["sites"]["reused"] == 8
    sc = pd.read_parquet(out2 / "single_cell.parquet", columns=["Metadata_Well", "Metadata_Outlier"])
    kept = sc.loc[~sc["Metadata_Outlier"]].groupby("Metadata_Well").size()
    prof = pd.read_parquet(out2 / "profiles.parquet").set_index("Metadata_Well")
    assert sc["Metadata_Outlier"].any() and len(sc) == len(pd.read_parquet(out / "single_cell.parquet",
                                                                            columns=["Metadata_Well"]))
    np.testing.assert_array_equal(prof.loc[kept.index, "Metadata_Object_Count"], kept.to_numpy())
    assert not list(out2.glob(".*.tmp"))


def test_without_platemap_the_model_is_fitted_on_all_cells(planted, tmp_path):
    import shutil

    from profiler.extract import extract
    from cellfusion_core.io import read_manifest

    plate, out = planted
    bare = tmp_path / "plate"
    shutil.copytree(plate, bare, ignore=shutil.ignore_patterns("platemap.csv", "ground_truth"))
    shutil.copytree(out / "sites", tmp_path / "out" / "sites")   # the outliers: section never reruns a site
    extract(bare, tmp_path / "out", workers=0, progress=False, pipeline={
        **__import__("profiler.config", fromlist=["load_pipeline"]).load_pipeline("example").to_dict(),
        "outliers": {"contamination": 0.05}})
    man = read_manifest(tmp_path / "out")
    facts = man["outliers"]
    assert man["sites"]["reused"] == 8
    assert facts["fit_on"] == "all cells" and "no platemap" in facts["note"]
    sc = pd.read_parquet(tmp_path / "out" / "single_cell.parquet", columns=["Metadata_Outlier"])
    assert 0.02 < sc["Metadata_Outlier"].mean() < 0.1


def test_example_plate_cli_plants_defects_and_refuses_a_bad_fraction(tmp_path, capsys):
    from conftest import run_cli

    code, err = run_cli(capsys, "profiler", "example-plate", str(tmp_path / "p"), "--n-wells", "5", "--n-sites", "1",
                        "--size", "128", "--defects", "0.3")
    assert code == 0, err
    d = pd.read_csv(tmp_path / "p" / "ground_truth" / "defects.csv")
    assert len(d) and set(d["kind"]) <= {"debris", "blurred", "merged"}
    code, err = run_cli(capsys, "profiler", "example-plate", str(tmp_path / "q"), "--defects", "0.9")
    assert code == 2 and not (tmp_path / "q").exists()


def test_fit_gives_the_same_bits_on_any_number_of_blas_threads():
    # the PCA's LAPACK factorizations change in their last bits with the BLAS thread count; the fit
    # runs on one thread so that the model and the scores do not depend on the machine or on a thread
    # limit the calling process set (with the PCA on the default threads this sample's components,
    # precision and thresholds differed between 1 and 2 threads)
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(3)
    n, p = 2000, 600
    values = rng.normal(size=(n, 8)) @ rng.normal(size=(8, p)) + rng.normal(size=(n, p))
    sample = pd.DataFrame(values, columns=[f"Cells_AreaShape_F{i}" for i in range(p)])
    models = []
    for limit in (1, 2):
        with threadpool_limits(limits=limit, user_api="blas"):
            models.append(fit_outlier_model(sample))
    one, two = models
    for field in ("center", "scale", "pca_mean", "components", "location", "precision"):
        assert np.array_equal(getattr(one, field), getattr(two, field)), field
    assert (one.sd_ref, one.od_ref, one.threshold) == (two.sd_ref, two.od_ref, two.threshold)


def test_scores_give_the_same_bits_on_any_number_of_blas_threads():
    # Dask workers run on one BLAS thread while `profiler extract` itself may run on several: the
    # scores' matrix products run on one thread, so a site scored on a worker gets the same bits as
    # one scored in the main process (on 2 threads these products differed in their last bits)
    from threadpoolctl import threadpool_limits

    from profiler.outliers import score_matrix

    rng = np.random.default_rng(5)
    n, p = 3000, 800
    values = rng.normal(size=(n, 8)) @ rng.normal(size=(8, p)) + rng.normal(size=(n, p))
    model = fit_outlier_model(pd.DataFrame(values[:2000], columns=[f"Cells_AreaShape_F{i}" for i in range(p)]))
    site = values[2000:2300]
    scores = []
    for limit in (1, 2):
        with threadpool_limits(limits=limit, user_api="blas"):
            scores.append(score_matrix(model, site))
    assert np.array_equal(scores[0], scores[1])


def test_sample_indices_let_the_control_partitions_be_sampled_alone(tmp_path):
    # profiler extract seeds each site's keys with its position in the plate scan, so the sample of
    # the control wells' partitions alone (drawn while other sites still run) is the sample drawn
    # from all partitions after the last site
    paths, wells = [], []
    for i in range(6):
        df = _cells(80, seed=i)
        well = ["B02", "B03", "B04"][i % 3]
        df.insert(0, "Metadata_Well", [well] * 80)
        paths.append(tmp_path / f"s{i}.parquet")
        wells.append(well)
        df.to_parquet(paths[-1])
    feats = list(_cells(1).columns)
    indices = [3, 4, 7, 8, 10, 12]  # sites without cells between them leave gaps
    every = sample_partitions(paths, feats, wells={"B03"}, max_cells=100, seed=1, indices=indices)
    alone = sample_partitions([p for p, w in zip(paths, wells) if w == "B03"], feats, wells={"B03"},
                              max_cells=100, seed=1, indices=[i for i, w in zip(indices, wells) if w == "B03"])
    pd.testing.assert_frame_equal(every, alone, check_exact=True)
    assert len(every) == 100
    default = sample_partitions(paths, feats, wells={"B03"}, max_cells=100, seed=1)
    assert not default.equals(every)  # the seeds are the indices
    with pytest.raises(ValueError):
        sample_partitions(paths, feats, wells=None, indices=[0, 1])


def test_plate_fit_uses_the_early_model_only_for_the_plates_features(tmp_path):
    from profiler import extract as ex

    paths = []
    for i in range(4):
        df = _cells(60, seed=i)
        df.insert(0, "Metadata_Well", ["B02", "B03"][i % 2])
        paths.append(tmp_path / f"s{i}.parquet")
        df.to_parquet(paths[-1])
    platemap = pd.DataFrame({"Metadata_Well": ["B02", "B03"], "Metadata_Control": ["negative", ""]})
    params = outlier_params({})
    feats = ex.outlier_features(ex.merged_schema(paths, None))
    # what the Dask task returns, from the control partitions alone
    early = ex.early_outlier_fit([str(paths[0]), str(paths[2])], [0, 2], {"B02"}, params)
    assert early[0] == feats
    model, info = ex.fit_plate_outliers(paths, platemap, params, tmp_path, indices=[0, 1, 2, 3], early=early)
    assert model is early[1] and info["fitted"].startswith("on a Dask worker")
    refit, info = ex.fit_plate_outliers(paths, platemap, params, tmp_path, indices=[0, 1, 2, 3])
    assert "fitted" not in info
    for field in ("center", "scale", "components", "location", "precision"):
        assert np.array_equal(getattr(model, field), getattr(refit, field)), field
    # a plate whose other sites have more columns than the controls': fitted again on the plate's features
    stale = (feats[:-1], early[1])
    model, info = ex.fit_plate_outliers(paths, platemap, params, tmp_path, indices=[0, 1, 2, 3], early=stale)
    assert model is not early[1] and "fitted" not in info


@pytest.mark.parametrize("n, p, shift", [(60, 3, 0.0), (400, 40, 0.0), (900, 10, 8.0), (1522, 40, 0.0),
                                         (1800, 12, 5.0), (700, 1, 0.0)])
def test_fast_mcd_gives_scikit_learns_min_cov_det_bit_for_bit(n, p, shift):
    # profiler._fast_mcd replays FastMCD without scikit-learn's per-call overhead; every estimate
    # (raw and reweighted) must be the same bits as MinCovDet's, on the paths of up to 500 samples,
    # of subsets merged below and above 1,500 samples, with a cluster of outliers, and for one feature
    # (handed to scikit-learn)
    from sklearn.covariance import MinCovDet

    from profiler.outliers import _min_cov_det, one_blas_thread

    rng = np.random.default_rng(n + p)
    x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
    x[: n // 10] += shift
    with one_blas_thread():
        ours = _min_cov_det()(random_state=0).fit(x)
        ref = MinCovDet(random_state=0).fit(x)
    for name in ("raw_location_", "raw_covariance_", "raw_support_", "location_", "covariance_", "support_",
                 "dist_", "precision_"):
        assert np.array_equal(getattr(ours, name), getattr(ref, name)), name
    # the raw FastMCD itself, distances included (MinCovDet recomputes those from the support)
    from sklearn.covariance import fast_mcd as sklearn_fast_mcd

    from profiler._fast_mcd import fast_mcd

    with one_blas_thread():
        raw = fast_mcd(x, np.random.RandomState(0))
        raw_ref = sklearn_fast_mcd(x, random_state=np.random.RandomState(0))
    for ours_part, ref_part in zip(raw, raw_ref):
        assert np.array_equal(ours_part, ref_part)


def test_fast_mcd_matches_on_the_outlier_models_own_sample():
    # the component scores of a real BBBC021-like fit: a PCA of squashed z-scores, as fit_outlier_model
    # hands them to MinCovDet (correlated, heavy-tailed columns of unequal variance)
    from sklearn.covariance import MinCovDet
    from sklearn.decomposition import PCA

    from profiler.outliers import _min_cov_det, _robust_scale, _squash, _z, one_blas_thread

    rng = np.random.default_rng(11)
    a = rng.standard_t(3, size=(1600, 200)) @ rng.normal(size=(200, 200)) * rng.uniform(0.1, 10, 200)
    center, scale, ok = _robust_scale(a)
    z = _squash(_z(a[:, ok], center[ok], scale[ok]))
    with one_blas_thread():
        t = PCA(n_components=40, random_state=0).fit_transform(z)
        ours = _min_cov_det()(random_state=0).fit(t)
        ref = MinCovDet(random_state=0).fit(t)
    assert np.array_equal(ours.location_, ref.location_) and np.array_equal(ours.covariance_, ref.covariance_)
    assert np.array_equal(ours.support_, ref.support_) and np.array_equal(ours.dist_, ref.dist_)
