"""cellfusion_core.columns: users' column names (pycytominer/JUMP/LINCS) and the one negative-control rule,
used by `profiler evaluate` and `fusion train` through their CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lincs_table import lincs_style_profiles
from cellfusion_core.columns import NEGATIVE_CONTROL_QUERY, control_mask, mark_controls, resolve_columns
from cellfusion_core.errors import ConfigError, InputError


def test_resolve_recognises_lincs_names_and_takes_given_ones():
    df = lincs_style_profiles()
    spec = resolve_columns(df)
    assert (spec.compound, spec.concentration, spec.moa, spec.batch) == (
        "Metadata_broad_sample", "Metadata_mmoles_per_liter", "Metadata_moa", "Metadata_Batch")
    assert spec.sources["compound"] == "recognised" and spec.sources["batch"] == "default"
    # our names win over recognised ones; pert_iname over broad_sample
    both = lincs_style_profiles(pert_iname=True)
    assert resolve_columns(both).compound == "Metadata_pert_iname"
    assert resolve_columns(both.assign(Metadata_Compound="x")).compound == "Metadata_Compound"
    given = resolve_columns(both, compound="Metadata_broad_sample", batch="Metadata_Plate")
    assert given.compound == "Metadata_broad_sample" and given.sources["compound"] == "given"
    assert given.treatment == ("Metadata_broad_sample", "Metadata_mmoles_per_liter")
    with pytest.raises(InputError, match="--compound column 'Metadata_nope'"):
        resolve_columns(df, compound="Metadata_nope")
    with pytest.raises(InputError, match="--moa"):
        resolve_columns(df.drop(columns="Metadata_moa")).require("compound", "moa", what="NSC")


def test_one_control_rule_default_value_and_query():
    df = lincs_style_profiles(pert_iname=True)
    empty = df["Metadata_broad_sample"].isna().to_numpy()
    # default: an empty compound is a control (broad_sample), so is DMSO (pert_iname)
    assert (control_mask(df, resolve_columns(df, compound="Metadata_broad_sample")) == empty).all()
    assert (control_mask(df, resolve_columns(df)) == empty).all()
    # a value of the compound column, and a pandas query
    assert (control_mask(df, resolve_columns(df, control="DMSO")) == empty).all()
    q = resolve_columns(df, control="Metadata_mmoles_per_liter == 0")
    assert (control_mask(df, q) == empty).all()
    with pytest.raises(ConfigError, match="neither a value"):
        control_mask(df, resolve_columns(df, control="saline"))
    # our marker column, and mark_controls writing any rule into it (for pycytominer's samples query)
    ours = pd.DataFrame({"Metadata_Compound": ["a", "b", "c"], "Metadata_Control": ["negative", "", "positive"]})
    assert control_mask(ours).tolist() == [True, False, False]
    marked = mark_controls(ours, resolve_columns(ours, control="b"))
    assert marked.query(NEGATIVE_CONTROL_QUERY)["Metadata_Compound"].tolist() == ["b"]
    assert marked["Metadata_Control"].tolist() == ["", "negative", "positive"]


def test_profiler_evaluate_cli_on_lincs_names(tmp_path):
    from profiler.cli import app

    path = tmp_path / "lincs.parquet"
    lincs_style_profiles().to_parquet(path)
    res = CliRunner().invoke(app, ["evaluate", str(path), "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    assert "compound=Metadata_broad_sample (recognised)" in res.output
    assert "NSC " in res.output and "NSCB" in res.output
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["nsc"]["n_queries"] == 14 and ev["nsc"]["accuracy"] > ev["nsc"]["chance"]
    assert ev["n_controls"] == 16
    # every treatment has 2 replicate wells (its batch's two plates): all 14 scored
    assert (ev["map_activity_scored"], ev["map_activity_treatments"]) == (14, 14)
    assert "14 of 14 treatments had >= 2 replicate wells" in res.output
    # the same table with other names, given explicitly; controls as a query
    other = lincs_style_profiles(batch_column="Metadata_run").rename(
        columns={"Metadata_broad_sample": "Metadata_sample", "Metadata_moa": "Metadata_target_class",
                 "Metadata_mmoles_per_liter": "Metadata_dose"})
    other.to_parquet(path)
    args = ["evaluate", str(path), "--compound", "Metadata_sample", "--concentration", "Metadata_dose",
            "--moa", "Metadata_target_class", "--batch", "Metadata_run", "--control", "Metadata_dose == 0",
            "--json", str(tmp_path / "ev2.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ev2 = json.loads((tmp_path / "ev2.json").read_text())
    assert ev2["nsc"] == ev["nsc"] and ev2["nscb"] == ev["nscb"]
    assert ev2["map_activity"] == pytest.approx(ev["map_activity"])
    # without replicates, activity says none could be scored
    single = lincs_style_profiles()
    single = single[single["Metadata_Plate"].isin(["P0", "P2"])]
    single.to_parquet(path)
    res = CliRunner().invoke(app, ["evaluate", str(path)])
    assert res.exit_code == 0, res.output
    assert "0 of 14" in res.output and "mAP phenotypic activity not computed" in res.output


def test_profiler_evaluate_cli_bad_column_is_one_error_line(tmp_path):
    exe = Path(sys.executable).parent / "profiler"
    if not exe.exists():
        pytest.skip(f"the profiler console script is not installed beside {sys.executable}")
    path = tmp_path / "lincs.parquet"
    lincs_style_profiles().to_parquet(path)
    res = subprocess.run([str(exe), "evaluate", str(path), "--moa", "Metadata_MoA"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())  # rich wraps long lines
    assert err.startswith("error:") and "--moa column 'Metadata_MoA' is not in the table" in err
    assert "Traceback" not in res.stderr


def test_fusion_train_cli_on_lincs_names_groups_by_compound(tmp_path):
    from fusion.cli import app

    path = tmp_path / "lincs.parquet"
    lincs_style_profiles().to_parquet(path)
    model = tmp_path / "model"
    res = CliRunner().invoke(app, ["train", str(path), "-o", str(model), "--label", "Metadata_moa", "--folds", "3"])
    assert res.exit_code == 0, res.output
    assert "leave-compound-out" in res.output
    metrics = json.loads((model / "metrics.json").read_text())
    g = metrics["grouping"]
    assert g["rule"] == "compound" and g["columns"] == ["Metadata_broad_sample"]
    # the MoA with one compound cannot be predicted when compounds are held out
    assert g["single_group_classes"] == {"lonely MoA": 4}
    assert g["accuracy_ceiling"] <= 1 - 4 / 28 + 1e-9
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["grouping"]["rule"] == "compound" and manifest["parameters"]["grouping"] == "compound"
    assert manifest["columns"]["compound"] == "Metadata_broad_sample"
    # no compound is in a training and a test fold at once
    oof = pd.read_parquet(model / "oof_predictions.parquet")
    assert (oof.groupby("Metadata_broad_sample")["Fold"].nunique() == 1).all()
    # the report header states the grouping; the unpredictable class is a warning with the ceiling
    from fusion.report import report

    text = " ".join(report(model).read_text().split())
    assert "leave-compound-out" in text and "Accuracy ceiling under this grouping" in text
    assert "cannot be predicted out of fold: lonely MoA (4 rows)" in text
    # label = the compound (role name accepted): replicate plates held out
    model2 = tmp_path / "model2"
    res = CliRunner().invoke(app, ["train", str(path), "-o", str(model2), "--label", "compound", "--folds", "2",
                                   "--compound", "Metadata_broad_sample"])
    assert res.exit_code == 0, res.output
    g2 = json.loads((model2 / "metrics.json").read_text())["grouping"]
    assert g2["rule"] == "plate" and "leave-plate-out" in g2["reason"]
    assert json.loads((model2 / "manifest.json").read_text())["parameters"]["label"] == "Metadata_broad_sample"
