""""Is this well perturbed?": ROC AUC for two-class labels, `fusion train --label perturbed`
(controls vs everything else, compound-grouped folds) and the per-treatment activity table of
`profiler evaluate`."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.metrics import classification_summary, roc_auc_summary


def test_roc_auc_matches_sklearn_and_baselines_are_half():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.array(["control"] * 40 + ["perturbed"] * 60)
    p = np.round(np.r_[rng.uniform(0, 0.6, 40), rng.uniform(0.4, 1, 60)], 1)   # ties on purpose
    s = classification_summary(y, np.where(p > 0.5, "perturbed", "control"), np.c_[1 - p, p],
                               ["control", "perturbed"])
    auc = s["scores"]["roc_auc"]
    assert auc["value"] == pytest.approx(roc_auc_score(y == "perturbed", p))
    assert auc["majority"] == 0.5 and auc["chance"] == 0.5
    assert auc["ci95"][0] < auc["value"] < auc["ci95"][1]
    # a reversed score is below chance; a multi-class label gets no roc_auc
    assert roc_auc_summary(y == "perturbed", -p)["value"] == pytest.approx(1 - auc["value"])
    y3 = np.array(list("abc") * 10)
    s3 = classification_summary(y3, y3, np.eye(3)[np.arange(30) % 3], list("abc"))
    assert "roc_auc" not in s3["scores"]


def planted_wells(seed: int = 0, n_plates: int = 4, effect: float = 1.0) -> "pd.DataFrame":
    """Per-well table over ``n_plates`` plates: on each plate 4 DMSO wells and one well of each of 8
    compounds; compounds p0–p5 shift a few features (planted perturbation, of varying direction), n0
    and n1 are drawn like DMSO (no effect). A single-well compound s0 sits on plate 0 only. ``effect``
    scales every planted shift (0: nothing is perturbed)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    f = 10
    shift = {f"p{i}": np.where(np.arange(f) < 3, 2.5, 0.0) * (1 if i % 2 else -1) + np.roll(
        np.where(np.arange(f) == 5, 2.0, 0.0), i) for i in range(6)}
    shift.update({"n0": np.zeros(f), "n1": np.zeros(f)})
    moa = {**{f"p{i}": f"M{i % 3}" for i in range(6)}, "n0": "M0", "n1": "M1", "s0": "M2"}
    rows = []
    for plate in range(n_plates):
        cells = [("DMSO", np.zeros(f))] * 4 + list(shift.items()) + ([("s0", shift["p0"])] if plate == 0 else [])
        for w, (comp, sh) in enumerate(cells):
            x = effect * sh + rng.normal(0, 1.0, f)
            rows.append({"Metadata_Plate": f"P{plate}", "Metadata_Well": f"W{w:02d}", "Metadata_Compound": comp,
                         "Metadata_Concentration": 0.0 if comp == "DMSO" else 1.0,
                         "Metadata_MoA": "control" if comp == "DMSO" else moa[comp],
                         **{f"feat_{j}": x[j] for j in range(f)}})
    return pd.DataFrame(rows)


def test_activity_table_lists_treatments_and_matches_map_scores():
    from profiler.evaluate import ACTIVITY_COLUMNS, map_scores, phenotypic_activity

    df = planted_wells()
    act = phenotypic_activity(df, null_size=2000)
    assert list(act.columns) == ["Metadata_Compound", "Metadata_Concentration", *ACTIVITY_COLUMNS]
    assert set(act["Metadata_Compound"]) == {f"p{i}" for i in range(6)} | {"n0", "n1", "s0"}   # no DMSO
    a = act.set_index("Metadata_Compound")
    assert not a.loc["s0", "scored"] and a.loc["s0", "n_wells"] == 1 and np.isnan(a.loc["s0", "mAP"])
    assert a.loc[[f"p{i}" for i in range(6)], "active"].all()
    assert not a.loc[["n0", "n1"], "active"].any()
    assert (a.loc[[f"p{i}" for i in range(6)], "mAP"] > a.loc[["n0", "n1"], "mAP"].max()).all()
    assert (a.loc[a["scored"], "corrected_p_value"] >= a.loc[a["scored"], "p_value"] - 1e-12).all()
    m = map_scores(df, null_size=2000)
    scored = act[act["scored"]]
    assert m["map_activity_treatments"] == 9 and m["map_activity_scored"] == 8
    assert m["map_activity"] == pytest.approx(scored["mAP"].mean())
    assert m["fraction_active"] == pytest.approx(6 / 8)


def test_evaluate_cli_prints_and_writes_activity(tmp_path, capsys):
    import json
    import sys

    import pandas as pd

    from cellfusion_core.cli import run_main
    from profiler.cli import app

    src = tmp_path / "wells.csv"
    planted_wells().to_csv(src, index=False)
    out = tmp_path / "ev"
    old, sys.argv = sys.argv, ["profiler", "evaluate", str(src), "-o", str(out)]
    try:
        run_main(app)
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "p0 @ 1.0: mAP" in cap.out and "differs from controls" in cap.out
    assert "n0 @ 1.0: mAP" in cap.out and "not distinguishable from controls" in cap.out
    assert "s0 @ 1.0: not scored" in cap.out
    act = pd.read_parquet(out / "activity.parquet")
    assert len(act) == 9 and int(act["active"].sum()) == 6
    man = json.loads((out / "manifest.json").read_text())
    assert man["outputs"]["activity.parquet"] == {"rows": 9, "active": 6, "scored": 8}
    scores = json.loads((out / "scores.json").read_text())
    assert scores["map_activity_scored"] == 8 and "activity" not in scores


def test_train_perturbed_separates_planted_wells(tmp_path):
    import json

    import pandas as pd

    from fusion.train import PERTURBED_COLUMN, train

    df = planted_wells(seed=1, n_plates=6, effect=1.5).query("Metadata_Compound not in ['n0', 'n1']")
    out = train(df, tmp_path / "m", label="perturbed", n_splits=4, seed=0)
    m = json.loads((out / "metrics.json").read_text())
    auc = m["scores"]["roc_auc"]
    assert auc["value"] > 0.9 and auc["majority"] == 0.5 and auc["ci95"][0] > 0.75
    assert m["scores"]["accuracy"]["value"] > m["scores"]["accuracy"]["majority"] + 0.15
    man = json.loads((out / "manifest.json").read_text())
    assert man["parameters"]["label"] == PERTURBED_COLUMN and man["classes"] == ["control", "perturbed"]
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    # compounds held out whole; the controls of a plate held out together
    treated = oof[oof["Metadata_Compound"] != "DMSO"]
    assert treated.groupby("Metadata_Compound")["Fold"].nunique().eq(1).all()
    ctrl = oof[oof["Metadata_Compound"] == "DMSO"]
    assert ctrl.groupby("Metadata_Plate")["Fold"].nunique().eq(1).all()
    assert (oof["Label"] == np.where(oof["Metadata_Compound"] == "DMSO", "control", "perturbed")).all()


def test_train_perturbed_finds_nothing_without_a_planted_effect(tmp_path):
    import json

    from fusion.train import train

    out = train(planted_wells(seed=1, n_plates=6, effect=0.0), tmp_path / "m", label="perturbed", n_splits=4, seed=0)
    auc = json.loads((out / "metrics.json").read_text())["scores"]["roc_auc"]
    assert auc["value"] < 0.75 and auc["ci95"][0] < 0.5 < auc["ci95"][1]


def test_train_perturbed_needs_controls(tmp_path):
    from fusion.train import train
    from cellfusion_core.errors import InputError

    df = planted_wells().query("Metadata_Compound != 'DMSO'")
    with pytest.raises(InputError, match="negative-control rows"):
        train(df, tmp_path / "m", label="perturbed")
    assert not (tmp_path / "m").exists()
