"""profiler.outliers: the per-cell outlier model (analytic cases) and its place in profiler extract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from profiler.errors import ConfigError, ModelFileError
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
    off_axis.iloc[0, 7] += 12.0                          # far along one feature only (orthogonal distance)
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
