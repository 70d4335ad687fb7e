"""profiler.profiles.transforms and .reference: scikit-learn transformers fit on the reference rows
(the negative controls by default, cellfusion_core.columns.control_mask), applied to every row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.decomposition import FactorAnalysis
from sklearn.pipeline import make_pipeline

from cellfusion_core.columns import control_mask
from cellfusion_core.errors import ConfigError, InputError
from profiler.profiles import (BoundEnsemble, Clip, TypicalVariation, bound_ensemble, factor_analysis,
                               fit_transform_table, normalize, reference_mask, typical_variation_normalize,
                               whiten)

N_FEAT = 6


def wells(seed=0, n_ctrl=12, n_trt=30, plates=("P1", "P2"), marker=True):
    """Per plate n_ctrl DMSO wells + n_trt treated wells; features correlated, treated wells shifted."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in plates:
        for i in range(n_ctrl + n_trt):
            ctrl = i < n_ctrl
            rows.append({"Metadata_Plate": p, "Metadata_Well": f"W{i:02d}", "Metadata_Batch": "B1",
                         "Metadata_Compound": "DMSO" if ctrl else f"C{i % 4}"}
                        | ({"Metadata_Control": "negative" if ctrl else ""} if marker else {}))
    df = pd.DataFrame(rows)
    mix = rng.normal(size=(N_FEAT, N_FEAT))
    x = rng.normal(size=(len(df), N_FEAT)) @ mix
    x[~control_mask(df)] += rng.normal(2.0, 1.5, size=((~control_mask(df)).sum(), N_FEAT))
    for j in range(N_FEAT):
        df[f"Cells_AreaShape_F{j}"] = x[:, j]
    return df


def features(df):
    return [c for c in df.columns if not c.startswith("Metadata_")]


def upset_treated(df, seed=1):
    """The same table with every non-control well's features replaced by wild values."""
    out = df.copy()
    treated = ~control_mask(df)
    rng = np.random.default_rng(seed)
    feats = [c for c in df.columns if c.startswith("Cells_")]
    out.loc[treated, feats] = rng.normal(50.0, 30.0, size=(treated.sum(), len(feats)))
    return out


STEPS = {
    "tvn_ledoit_wolf": lambda t, s: typical_variation_normalize(t, samples=s),
    "tvn_pca": lambda t, s: typical_variation_normalize(t, samples=s, method="pca", epsilon=0.5),
    "tvn_pca_by_plate": lambda t, s: typical_variation_normalize(t, samples=s, method="pca", by="Metadata_Plate"),
    "factor_analysis": lambda t, s: factor_analysis(t, samples=s, n_factors=2),
    "bound_ensemble": lambda t, s: bound_ensemble(t, samples=s, clip=(1.0, None), epsilon=(0.1, 10.0)),
    "normalize_mad": lambda t, s: normalize(t, method="mad_robustize", samples=s),
    "normalize_standardize": lambda t, s: normalize(t, method="standardize", samples=s),
    "normalize_scale_by": lambda t, s: normalize(t, method="robustize", samples=s, scale_by="Metadata_Batch"),
    "whiten": lambda t, s: whiten(t, samples=s, epsilon=1e-3),
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_fit_on_controls_only(name):
    """Replacing every non-control well leaves the control wells' output bit for bit unchanged — the
    fit saw only the controls; fit on all wells (samples='all') the same change does move them."""
    step = STEPS[name]
    df = wells()
    upset = upset_treated(df)
    ctrl = control_mask(df)
    a, b = step(df, "controls"), step(upset, "controls")
    fa, fb = features(a), features(b)
    assert fa == fb
    np.testing.assert_array_equal(a.loc[ctrl, fa].to_numpy(), b.loc[ctrl, fb].to_numpy())
    assert not np.allclose(a.loc[~ctrl, fa].to_numpy(), b.loc[~ctrl, fb].to_numpy())
    # the test can fail: a fit that sees the treated wells changes the controls' output
    c, d = step(df, "all"), step(upset, "all")
    assert not np.allclose(c.loc[ctrl, features(c)].to_numpy(), d.loc[ctrl, features(d)].to_numpy())


def test_default_reference_is_the_one_control_rule():
    """No marker column: the default 'controls' still finds the DMSO wells (and empty compounds), as
    evaluate and fusion train do; an explicit query selects what it says."""
    df = wells(marker=False)
    df.loc[df.index[-1], "Metadata_Compound"] = ""   # pycytominer/LINCS tables leave the control compound empty
    np.testing.assert_array_equal(reference_mask(df), control_mask(df))
    assert reference_mask(df).sum() == 2 * 12 + 1
    dmso = "Metadata_Compound == 'DMSO'"
    np.testing.assert_array_equal(reference_mask(df, dmso), (df["Metadata_Compound"] == "DMSO").to_numpy())
    assert reference_mask(df, "all").all()
    ours = normalize(df, method="standardize")
    ref = normalize(df, method="standardize", samples="Metadata_Compound == 'DMSO' or Metadata_Compound == ''")
    pd.testing.assert_frame_equal(ours, ref)
    with pytest.raises(ConfigError, match="cannot evaluate the control query \"Metadata_Control"):
        normalize(df, samples="Metadata_Control == 'negative'")   # the marker query needs the marker column
    with pytest.raises(ConfigError, match="cannot evaluate the control query"):
        reference_mask(df, "Metadata_Compound ==")
    with pytest.raises(ConfigError, match="samples must be"):
        reference_mask(df, None)


def test_fit_transform_table_equals_manual_fit_per_group():
    df = wells(seed=3)
    out = fit_transform_table(TypicalVariation(method="pca", epsilon=1.0), df, by="Metadata_Plate", min_reference=3)
    for plate, grp in df.groupby("Metadata_Plate"):
        x = grp[features(df)].to_numpy(float)
        ctrl = control_mask(grp)
        manual = TypicalVariation(method="pca", epsilon=1.0).fit(x[ctrl]).transform(x)
        got = out[out["Metadata_Plate"] == plate]
        np.testing.assert_allclose(got[[c for c in got if c.startswith("TVN_")]].to_numpy(), manual, rtol=0, atol=1e-12)
    # the controls of each plate are whitened: identity covariance over their kept components
    p1 = out[(out["Metadata_Plate"] == "P1") & control_mask(out)]
    tvn = p1[[c for c in p1 if c.startswith("TVN_")]].to_numpy()
    ev = np.linalg.eigvalsh(np.cov(tvn.T))
    assert np.all(ev < 1.0 + 1e-9)   # shrunk by epsilon x mean eigenvalue, never amplified
    with pytest.raises(InputError, match="needs >= 3"):
        fit_transform_table(TypicalVariation(), df.iloc[[0, 1, 20, 21, 22]], min_reference=3, what="typical variation")


def test_ledoit_wolf_whitens_the_controls():
    df = wells(seed=4, n_ctrl=200, plates=("P1",))
    out = typical_variation_normalize(df)
    ctrl = out[control_mask(out)][features(out)].to_numpy()
    assert features(out) == features(df)                      # feature names kept
    np.testing.assert_allclose(ctrl.mean(axis=0), 0, atol=1e-9)
    from sklearn.covariance import LedoitWolf

    raw = df[control_mask(df)][features(df)].to_numpy()
    lw = LedoitWolf().fit(raw)
    vals, vecs = np.linalg.eigh(lw.covariance_)
    inv_sqrt = vecs @ np.diag(vals ** -0.5) @ vecs.T
    # ZCA with the shrunk covariance C: cov(out) = C^-1/2 S C^-1/2 (S the controls' empirical covariance)
    np.testing.assert_allclose(np.cov(ctrl.T, ddof=0), inv_sqrt @ np.cov(raw.T, ddof=0) @ inv_sqrt, atol=1e-9)
    assert np.linalg.cond(np.cov(ctrl.T)) < np.linalg.cond(np.cov(raw.T)) / 10


def test_transformers_are_scikit_learn_estimators():
    df = wells(seed=5)
    x = df[features(df)].to_numpy(float)
    ctrl = control_mask(df)
    tv = TypicalVariation(method="pca", epsilon=0.3, clip=2.0)
    assert clone(tv).get_params() == {"method": "pca", "epsilon": 0.3, "clip": 2.0}
    pipe = make_pipeline(Clip(3.0), TypicalVariation(method="pca", epsilon=0.3)).fit(x[ctrl])
    manual = TypicalVariation(method="pca", epsilon=0.3).fit(np.clip(x[ctrl], -3, 3)).transform(np.clip(x, -3, 3))
    np.testing.assert_array_equal(pipe.transform(x), manual)
    assert list(Clip(1.0).fit(x).get_feature_names_out(features(df))) == features(df)
    y = tv.fit(x[ctrl]).transform(x)
    assert np.abs(y).max() <= 2.0 and list(tv.get_feature_names_out())[:2] == ["TVN_0001", "TVN_0002"]
    # a reused PCA with another epsilon is the same as a fresh fit with it
    np.testing.assert_array_equal(tv.with_epsilon(5.0).transform(x),
                                  TypicalVariation(method="pca", epsilon=5.0, clip=2.0).fit(x[ctrl]).transform(x))
    # the layout of the input does not change a bit of the output
    np.testing.assert_array_equal(tv.transform(np.ascontiguousarray(x)), tv.transform(np.asfortranarray(x)))


def test_factor_analysis_is_scikit_learn_fit_on_controls():
    df = wells(seed=6)
    x = df[features(df)].to_numpy(float)
    ctrl = control_mask(df)
    out = factor_analysis(df, n_factors=2, seed=0)
    ref = FactorAnalysis(n_components=2, random_state=0).fit(x[ctrl]).transform(x)
    np.testing.assert_allclose(out[["FA_0001", "FA_0002"]].to_numpy(), ref, rtol=1e-10, atol=1e-12)


def test_bound_ensemble_blocks_are_clipped_whitened_unit_vectors():
    df = wells(seed=7)
    x = df[features(df)].to_numpy(float)
    ctrl = control_mask(df)
    out = bound_ensemble(df, clip=(1.5, None), epsilon=(0.1, 1.0))
    blocks = sorted({c.split("_")[0] for c in features(out)})
    assert blocks == ["B01", "B02", "B03", "B04"]
    for k, (c, e) in enumerate([(1.5, 0.1), (1.5, 1.0), (None, 0.1), (None, 1.0)], start=1):
        xc = np.clip(x, -c, c) if c is not None else x
        y = TypicalVariation(method="pca", epsilon=e).fit(xc[ctrl]).transform(xc)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        got = out[[col for col in features(out) if col.startswith(f"B{k:02d}_")]].to_numpy()
        np.testing.assert_allclose(got, y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0)
    with pytest.raises(ConfigError, match="positive"):
        BoundEnsemble(clip=(0,)).fit(x)
