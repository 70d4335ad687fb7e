"""The bad-input corpus (tests/badinput/generate.py): every fault gets a specific message or a QC
record, the rest of the plate is processed, and no partial output file remains."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from profiler.errors import CellfusionError, InputError, ModelFileError
from profiler.extract import extract

_spec = importlib.util.spec_from_file_location("badinput_generate", Path(__file__).parent / "badinput" / "generate.py")
generate_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = generate_mod  # dataclasses look their module up there
_spec.loader.exec_module(generate_mod)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("badinput")
    generate_mod.generate(out)
    return out


@pytest.fixture(scope="module")
def cases(corpus) -> dict:
    return {c["name"]: c for c in json.loads((corpus / "corpus.json").read_text())["cases"]}


@pytest.fixture(scope="module")
def plate_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("badinput_out") / "out"
    extract(corpus / "plate", out, workers=0, progress=False)
    return out


def no_partial_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def image_rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "image.parquet")


def row_of(out: Path, well: str) -> pd.Series:
    img = image_rows(out)
    sel = img[img["Metadata_Well"] == well]
    assert len(sel) == 1, f"no single image row for well {well}"
    return sel.iloc[0]


def test_corpus_has_every_case(cases):
    expected = {"truncated_tiff", "zero_byte", "float64", "rgb", "different_shapes", "missing_channel",
                "all_zero", "saturated", "duplicate_wells", "missing_wells", "unknown_wells", "path_outside_plate",
                "pickle_model"}
    if os.name == "posix" and os.uname().sysname == "Linux":
        expected.add("non_utf8_name")
    assert expected <= set(cases)


@pytest.mark.parametrize("name, words", [
    ("truncated_tiff", "cannot read image"),
    ("zero_byte", "cannot read image"),
    ("float64", "unsupported pixel type float64"),
    ("rgb", "expected a 2-D grayscale image"),
    ("different_shapes", "different shapes"),
    ("missing_channel", "missing channel(s): Actin"),
])
def test_broken_site_gets_a_specific_record(plate_run, corpus, cases, name, words):
    case = cases[name]
    row = row_of(plate_run, case["well"])
    assert row["Metadata_Status"] in ("error", "incomplete")
    assert words in row["Metadata_Reason"]
    if name != "missing_channel":  # the message names the file (the plate folder for shapes)
        assert Path(case["path"]).name in row["Metadata_Reason"] or str(corpus / "plate") in row["Metadata_Reason"]
    assert row["Count_Cells"] == 0
    # nothing of that site reached the cell table, and it has no partition
    sc = pd.read_parquet(plate_run / "single_cell.parquet")
    assert case["well"] not in set(sc["Metadata_Well"])
    assert not list((plate_run / "sites").glob(f"*_{case['well']}_*.parquet"))


def test_empty_fields_give_records_not_crashes(plate_run, cases):
    zero = row_of(plate_run, cases["all_zero"]["well"])
    assert zero["Metadata_Status"] != "failed"
    assert zero["Count_Cells"] == 0
    sat = row_of(plate_run, cases["saturated"]["well"])
    assert sat["Metadata_Status"] != "failed"
    # the QC record says what is wrong with them (MeasureImageQuality's columns)
    assert (sat.filter(like="ImageQuality_PercentSaturated_") == 100).all()
    assert (zero.filter(like="ImageQuality_PercentSaturated_") == 0).all()
    assert len(sat.filter(like="ImageQuality_PercentSaturated_")) == 3


def test_non_utf8_file_name_is_refused_by_name(plate_run, cases):
    if "non_utf8_name" not in cases:
        pytest.skip("this file system refuses non-UTF-8 names")
    img = image_rows(plate_run)
    bad = img[img["Metadata_Plate"].str.contains("\\xe9", regex=False)]
    assert len(bad) == 1
    assert bad.iloc[0]["Metadata_Status"] == "error"
    assert "file name is not valid UTF-8" in bad.iloc[0]["Metadata_Reason"]
    assert "\\xe9" in bad.iloc[0]["Metadata_Reason"]  # printable, so the user can find the file


def test_rest_of_the_plate_is_processed(plate_run, corpus):
    good = json.loads((corpus / "corpus.json").read_text())["good_wells"]
    for well in good:
        row = row_of(plate_run, well)
        assert row["Metadata_Status"] == "ok" and row["Count_Cells"] > 0
    sc = pd.read_parquet(plate_run / "single_cell.parquet")
    assert set(good) <= set(sc["Metadata_Well"])
    manifest = json.loads((plate_run / "manifest.json").read_text())
    assert len(manifest["sites"]["skipped"]) >= 7
    no_partial_files(plate_run)


def test_duplicate_wells_platemap_stops_before_any_work(corpus, cases, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="more than once") as err:
        extract(corpus / "plate", out, platemap=corpus / cases["duplicate_wells"]["path"], workers=0,
                progress=False)
    assert "duplicate_wells.csv" in str(err.value)
    assert not out.exists() or not any(out.rglob("*"))


def test_platemap_missing_wells_stops_before_any_work(corpus, cases, tmp_path):
    out = tmp_path / "out"
    case = cases["missing_wells"]
    with pytest.raises(InputError, match=f"no row for 1 well.*{case['well']}") as err:
        extract(corpus / "plate", out, platemap=corpus / case["path"], workers=0, progress=False)
    assert "missing_wells.csv" in str(err.value)
    assert not out.exists() or not any(out.rglob("*"))


def test_unknown_platemap_wells_are_reported(corpus, cases, plate_run, tmp_path, caplog):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(plate_run, out)  # resume: only the annotation is redone
    case = cases["unknown_wells"]
    with caplog.at_level(logging.WARNING):
        extract(corpus / "plate", out, platemap=corpus / case["path"], workers=0, progress=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "P24" in text and "Z99" in text
    manifest = json.loads((out / "manifest.json").read_text())
    n_ok = int((image_rows(plate_run)["Metadata_Status"] == "ok").sum())
    assert manifest["sites"]["reused"] == n_ok  # a platemap change recomputes no processed site
    assert {"P24", "Z99"} <= set(manifest["platemap_wells_without_images"])
    pd.testing.assert_frame_equal(pd.read_parquet(out / "single_cell.parquet"),
                                  pd.read_parquet(plate_run / "single_cell.parquet"))
    no_partial_files(out)


def test_layout_path_outside_the_plate_folder_is_refused(corpus, cases, tmp_path):
    from profiler.config import load_pipeline

    case = cases["path_outside_plate"]
    cfg = load_pipeline("example").to_dict()
    cfg["layout"] = {"preset": "csv", "csv": Path(case["path"]).name}
    out = tmp_path / "out"
    extract(corpus / "layout_csv", out, pipeline=cfg, workers=0, progress=False)
    img = image_rows(out).set_index("Metadata_Well")
    bad = img.loc[case["well"]]
    assert bad["Metadata_Status"] == "error"
    assert "outside the plate folder" in bad["Metadata_Reason"] and "secret.tif" in bad["Metadata_Reason"]
    assert (img.drop(index=case["well"])["Metadata_Status"] == "ok").all()
    sc = pd.read_parquet(out / "single_cell.parquet")
    assert case["well"] not in set(sc["Metadata_Well"]) and len(sc) > 0
    no_partial_files(out)


def test_pickle_model_is_refused_without_running_it(corpus, cases):
    from fusion.modelio import load_xgb_booster, verify_model_dir

    marker = corpus / json.loads((corpus / "corpus.json").read_text())["marker"]
    mdir = corpus / Path(cases["pickle_model"]["path"]).parent
    with pytest.raises(ModelFileError, match="pickle"):
        load_xgb_booster(mdir, "model.ubj")
    with pytest.raises(ModelFileError, match="pickle"):
        verify_model_dir(mdir)
    assert not marker.exists()


def test_every_error_is_a_cellfusion_error_with_a_file(corpus, plate_run):
    """The records carry the CellfusionError text: file, problem, hint — never a bare traceback."""
    img = image_rows(plate_run)
    for _, row in img[img["Metadata_Status"] == "error"].iterrows():
        assert "hint:" in row["Metadata_Reason"], row["Metadata_Reason"]
        assert "Traceback" not in row["Metadata_Reason"]
    assert issubclass(InputError, CellfusionError)
