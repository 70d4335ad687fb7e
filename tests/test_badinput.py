"""The bad-input corpus (tests/badinput/generate.py): every fault gets a specific message or a QC
record, the rest of the plate is processed, and no partial output file remains.

docs/reliability.md lists every case, what the user sees and the test here that checks it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import load_script, run_cli
from cellfusion_core.errors import CellfusionError, InputError, ModelFileError
from profiler.extract import extract

generate_mod = load_script(Path(__file__).parent / "badinput" / "generate.py", "badinput_generate")


def one_error(code: int, err: str, *words: str) -> None:
    """Exit status 2 and an `error:` line holding every word."""
    assert code == 2, err
    assert err.count("error:") == 1, err  # (log warnings may come before it)
    for w in words:
        assert w in err, (w, err)


def fast(corpus: Path) -> Path:
    """The example pipeline with two feature families (the corpus is about inputs, not features)."""
    return corpus / "pipelines" / "fast.yaml"


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
    extract(corpus / "plate", out, pipeline=fast(corpus), workers=0, progress=False)
    return out


def no_partial_files(folder: Path) -> None:
    # (.extract.lock is the run lock, held with flock; it is not output and never stuck)
    leftovers = [p for p in folder.rglob("*") if (p.name.startswith(".") and p.name != ".extract.lock")
                 or p.suffix == ".tmp"]
    assert leftovers == []


def image_rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "image.parquet")


def row_of(out: Path, well: str) -> pd.Series:
    img = image_rows(out)
    sel = img[img["Metadata_Well"] == well]
    assert len(sel) == 1, f"no single image row for well {well}"
    return sel.iloc[0]


def test_corpus_has_every_case(cases, corpus):
    expected = {"truncated_tiff", "zero_byte", "float64_unit", "rgb", "different_shapes", "missing_channel",
                "all_zero", "saturated", "duplicate_wells", "missing_wells", "unknown_wells", "path_outside_plate",
                "pickle_model"}
    expected |= {"float32_unit", "float_out_of_range", "nan_pixels", "inf_pixels", "uint8", "uint32", "int16",
                 "ome_zstack", "multipage", "mixed_dtypes", "huge_image", "jpeg_named_tif", "html_named_tif",
                 "well_1536", "zstack_plane", "zstack_plane_out_of_range", "model_newer_format", "model_old_layout",
                 "model_no_files_key", "model_config_schema"}
    expected |= {n for n, *_ in PLATEMAP_ERRORS} | {n for n in PLATEMAP_ACCEPTED}
    expected |= {f"pipeline_{n}" for n, _ in PIPELINE_ERRORS}
    if os.name == "posix" and os.uname().sysname == "Linux":
        expected.add("non_utf8_name")
    assert expected <= set(cases)
    assert len(cases) >= 30
    for c in cases.values():  # every case's input exists (but the deleted channel file)
        assert (corpus / c["path"]).exists() != (c["name"] == "missing_channel"), c


@pytest.mark.parametrize("name, words", [
    ("truncated_tiff", "cannot read image"),
    ("zero_byte", "cannot read image"),
    ("rgb", "expected a 2-D grayscale image"),
    ("float_out_of_range", "float32 image has values from 0 to"),
    ("nan_pixels", "float32 image has 5 NaN and 0 infinite pixel(s)"),
    ("inf_pixels", "float32 image has 0 NaN and 3 infinite pixel(s)"),
    ("uint32", "unsupported pixel type uint32"),
    ("int16", "unsupported pixel type int16"),
    ("ome_zstack", "image has 3 planes (axes ZYX"),
    ("multipage", "image has 3 planes (3 pages of"),
    ("mixed_dtypes", "different pixel types"),
    ("huge_image", "image is 60000×60000 pixels"),
    ("jpeg_named_tif", "not a TIFF file (a JPEG image"),
    ("html_named_tif", "not a TIFF file (a text/HTML/XML file"),
    ("different_shapes", "different shapes"),
    ("missing_channel", "missing channel(s): Actin"),
])
def test_broken_site_gets_a_specific_record(plate_run, corpus, cases, name, words):
    case = cases[name]
    row = row_of(plate_run, case["well"])
    assert row["Metadata_Status"] in ("error", "incomplete")
    assert words in row["Metadata_Reason"]
    if name in HINTS:
        assert HINTS[name] in row["Metadata_Reason"], row["Metadata_Reason"]
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


def test_non_utf8_file_name_is_refused_by_name(cases, corpus, tmp_path):
    if "non_utf8_name" not in cases:
        pytest.skip("this file system refuses non-UTF-8 names")
    out = tmp_path / "out"
    extract(corpus / "nonutf8_plate", out, pipeline=fast(corpus), workers=0, progress=False)
    img = image_rows(out)
    bad = img[img["Metadata_Plate"].str.contains("\\xe9", regex=False)]
    assert len(bad) == 1
    assert bad.iloc[0]["Metadata_Status"] == "error"
    assert "file name is not valid UTF-8" in bad.iloc[0]["Metadata_Reason"]
    assert "\\xe9" in bad.iloc[0]["Metadata_Reason"]  # printable, so the user can find the file
    assert (img.drop(index=bad.index)["Metadata_Status"] == "ok").all()


def test_rest_of_the_plate_is_processed(plate_run, corpus):
    good = json.loads((corpus / "corpus.json").read_text())["good_wells"]
    for well in good:
        row = row_of(plate_run, well)
        assert row["Metadata_Status"] == "ok" and row["Count_Cells"] > 0
    sc = pd.read_parquet(plate_run / "single_cell.parquet")
    assert set(good) <= set(sc["Metadata_Well"])
    manifest = json.loads((plate_run / "manifest.json").read_text())
    assert len(manifest["sites"]["skipped"]) >= 16
    no_partial_files(plate_run)


def test_duplicate_wells_platemap_stops_before_any_work(corpus, cases, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="more than once") as err:
        extract(corpus / "plate", out, pipeline=fast(corpus), platemap=corpus / cases["duplicate_wells"]["path"], workers=0,
                progress=False)
    assert "duplicate_wells.csv" in str(err.value)
    assert not out.exists() or not any(out.rglob("*"))


def test_platemap_missing_wells_stops_before_any_work(corpus, cases, tmp_path):
    out = tmp_path / "out"
    case = cases["missing_wells"]
    with pytest.raises(InputError, match=f"no row for 1 well.*{case['well']}") as err:
        extract(corpus / "plate", out, pipeline=fast(corpus), platemap=corpus / case["path"], workers=0,
                progress=False)
    assert "missing_wells.csv" in str(err.value)
    assert not out.exists() or not any(out.rglob("*"))


def test_unknown_platemap_wells_are_reported(corpus, cases, plate_run, tmp_path, caplog):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(plate_run, out)  # resume: only the annotation is redone
    case = cases["unknown_wells"]
    with caplog.at_level(logging.WARNING):
        extract(corpus / "plate", out, pipeline=fast(corpus), platemap=corpus / case["path"], workers=0,
                progress=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "P24" in text and "AF48" in text
    manifest = json.loads((out / "manifest.json").read_text())
    n_ok = int((image_rows(plate_run)["Metadata_Status"] == "ok").sum())
    assert manifest["sites"]["reused"] == n_ok  # a platemap change recomputes no processed site
    assert {"P24", "AF48"} <= set(manifest["platemap_wells_without_images"])
    pd.testing.assert_frame_equal(pd.read_parquet(out / "single_cell.parquet"),
                                  pd.read_parquet(plate_run / "single_cell.parquet"))
    no_partial_files(out)


def test_layout_path_outside_the_plate_folder_is_refused(corpus, cases, tmp_path):
    from profiler.config import load_pipeline

    case = cases["path_outside_plate"]
    cfg = load_pipeline(fast(corpus)).to_dict()
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


# ---------------------------------------------------------------------------------------------
# Images: what is accepted (float in [0, 1], 8-bit, a plane of a z-stack, 1536-well names)
# ---------------------------------------------------------------------------------------------

HINTS = {  # the part of the hint that tells the user what to do
    "float_out_of_range": "rescale to [0, 1] or save raw counts as 16-bit",
    "nan_pixels": "pixels must be finite",
    "uint32": "no agreed intensity scale",
    "ome_zstack": "image: {plane: 1}",
    "multipage": "image: {plane: 1}",
    "mixed_dtypes": "same bit depth",
    "huge_image": "image.max_megapixels",
    "jpeg_named_tif": "export the image as a grayscale TIFF",
}


def features_of(out: Path, well: str) -> pd.DataFrame:
    sc = pd.read_parquet(out / "single_cell.parquet")
    part = sc[sc["Metadata_Well"] == well]
    return part[[c for c in sc.columns if not c.startswith("Metadata_")]].reset_index(drop=True)


@pytest.mark.parametrize("name", ["float64_unit", "float32_unit", "uint8", "well_1536"])
def test_accepted_variants_are_processed(plate_run, cases, name):
    row = row_of(plate_run, cases[name]["well"])
    assert row["Metadata_Status"] == "ok", row["Metadata_Reason"]
    assert row["Count_Cells"] > 0


@pytest.mark.parametrize("name", ["float32_unit", "well_1536"])
def test_float_unit_and_1536_copies_give_well_0s_cells(plate_run, corpus, cases, name):
    """float32 raw/65535 pixels are read as the same intensities as the 16-bit file; AA01 is well 0's copy."""
    good = json.loads((corpus / "corpus.json").read_text())["good_wells"][0]
    pd.testing.assert_frame_equal(features_of(plate_run, cases[name]["well"]), features_of(plate_run, good))


def test_1536_well_is_annotated_from_its_platemap_row(plate_run):
    sc = pd.read_parquet(plate_run / "single_cell.parquet")
    aa = sc[sc["Metadata_Well"] == "AA01"]
    assert len(aa) > 0 and aa["Metadata_Compound"].notna().all()


def test_huge_image_is_refused_from_the_header_without_allocating(corpus, cases):
    """The 60000² header is refused before any pixel is read: under a 4 GiB address-space limit too
    (the pixels would take 6.7 GiB as 16-bit, 13.4 GiB as float32)."""
    import subprocess

    path = corpus / cases["huge_image"]["path"]
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30));"
            "from profiler.plate import read_image; from cellfusion_core.errors import InputError\n"
            f"try:\n    read_image({str(path)!r})\nexcept InputError as e:\n    print(e)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "60000×60000" in res.stdout and "max_megapixels = 256" in res.stdout


def test_zstack_plane_choice_reads_that_plane(corpus, tmp_path, capsys):
    code, err = run_cli(capsys, "profiler", "extract", corpus / "zstack_plate", "-o", tmp_path / "z",
                    "-p", corpus / "pipelines" / "zstack_plane2.yaml", "--workers", "0", "--no-progress")
    assert code == 0, err
    img = image_rows(tmp_path / "z")
    assert (img["Metadata_Status"] == "ok").all() and (img["Count_Cells"] > 0).all()
    # plane 2 is the original 2-D image: the same cells as the plain files, read without a plane
    plain = tmp_path / "plain"
    plain.mkdir()
    import tifffile

    for p in (corpus / "zstack_plate").glob("*.tif"):
        tifffile.imwrite(plain / p.name, tifffile.imread(p)[1])
    (plain / "platemap.csv").write_bytes((corpus / "zstack_plate" / "platemap.csv").read_bytes())
    (tmp_path / "plain.yaml").write_text(generate_mod.pipeline_text("plain"))  # the same, without image.plane
    code, err = run_cli(capsys, "profiler", "extract", plain, "-o", tmp_path / "p",
                    "-p", tmp_path / "plain.yaml", "--workers", "0", "--no-progress")
    assert code == 0, err
    for well in img["Metadata_Well"]:
        pd.testing.assert_frame_equal(features_of(tmp_path / "z", well), features_of(tmp_path / "p", well))


def test_zstack_plane_out_of_range_is_refused_per_site(corpus, tmp_path, capsys):
    out = tmp_path / "z5"
    code, err = run_cli(capsys, "profiler", "extract", corpus / "zstack_plate", "-o", out,
                    "-p", corpus / "pipelines" / "zstack_plane5.yaml", "--workers", "0", "--no-progress")
    assert code == 2 and "error: " in err and "no site yielded any cells" in err, err
    assert "has 3 plane(s), but the pipeline asks for image.plane = 5" in err
    assert not (out / "single_cell.parquet").exists()
    img = image_rows(out)
    assert (img["Metadata_Status"] == "error").all()
    no_partial_files(out)


def test_zstack_without_plane_is_refused(corpus, tmp_path, capsys):
    code, err = run_cli(capsys, "profiler", "extract", corpus / "zstack_plate", "-o", tmp_path / "z0",
                    "-p", fast(corpus), "--workers", "0", "--no-progress")
    assert code == 2 and "image has 3 planes" in err, err


# ---------------------------------------------------------------------------------------------
# Platemaps
# ---------------------------------------------------------------------------------------------

PLATEMAP_ACCEPTED = ("excel_export", "excel_unicode_text", "well_name_variants", "concentration_units",
                     "metadata_headers", "windows_1252")

PLATEMAP_ERRORS = [  # case, words of the one error line
    ("unknown_unit", "line 4: unknown concentration unit 'mg/ml'"),
    ("concentration_not_number", "line 3: concentration 'high' is not a number"),
    ("mixed_units", "has no unit, but line 2 has one"),
    ("duplicate_column", "platemap has column 'compound' twice"),
    ("missing_column", "platemap has no 'compound' column"),
    ("bad_well_name", "line 5: 'Well 5' is not a well name"),
    ("unquoted_comma", "line 4 has 5 fields, the header has 4"),
    ("excel_workbook", "platemap is an Excel workbook, not a CSV file"),
    ("duplicate_wells", "platemap lists wells more than once"),
    ("missing_wells", "platemap has no row for 1 well(s) that have images"),
]


@pytest.mark.parametrize("name", PLATEMAP_ACCEPTED)
def test_spreadsheet_exports_read_like_the_plain_platemap(corpus, cases, name, caplog):
    from profiler.plate import read_platemap

    with caplog.at_level(logging.WARNING):
        got = read_platemap(corpus / cases[name]["path"])
    pd.testing.assert_frame_equal(got, read_platemap(corpus / "plate" / "platemap.csv"))
    if name == "windows_1252":
        assert "Windows-1252" in caplog.text


def test_excel_export_end_to_end(corpus, cases, plate_run, tmp_path, capsys):
    """The CLI with the Excel export: the same annotated cell table as with the plain platemap."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(plate_run, out)  # resume: only the annotation is redone
    code, err = run_cli(capsys, "profiler", "extract", corpus / "plate", "-o", out, "--platemap",
                    corpus / cases["excel_export"]["path"], "-p", fast(corpus), "--workers", "0", "--no-progress")
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "single_cell.parquet"),
                                  pd.read_parquet(plate_run / "single_cell.parquet"))
    no_partial_files(out)


@pytest.mark.parametrize("name, words", PLATEMAP_ERRORS)
def test_bad_platemap_is_one_error_line_before_any_work(corpus, cases, tmp_path, capsys, name, words):
    out = tmp_path / "out"
    path = corpus / cases[name]["path"]
    code, err = run_cli(capsys, "profiler", "extract", corpus / "plate", "-o", out, "--platemap", path,
                    "-p", fast(corpus), "--workers", "0", "--no-progress")
    one_error(code, err, words, path.name)
    assert not out.exists() or not any(out.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------

PIPELINE_ERRORS = [
    ("yaml_syntax", ["not valid YAML"]),
    ("tab_indent", ["not valid YAML"]),
    ("unknown_family", ["unknown feature family 'Intensty'", "did you mean 'Intensity'?"]),
    ("unknown_parameter", ["unknown segmentation.nuclei key 'min_diamter'", "did you mean 'min_diameter'?"]),
    ("unknown_section", ["unknown top-level keys: ['segmentaton']", "did you mean 'segmentation'?"]),
    ("negative_diameter", ["segmentation.nuclei.min_diameter must be > 0, got -5"]),
    ("bounds_reversed", ["threshold_bounds must satisfy 0 ≤ lower < upper ≤ 1, got [0.8, 0.2] (reversed)"]),
    ("wrong_type", ["segmentation.nuclei.min_diameter must be a number, got 'big'"]),
    ("no_cells_role", ["no channel has role 'cells'"]),
    ("bad_plane", ["image.plane must be a whole number ≥ 1"]),
    ("not_a_mapping", ["a pipeline must be a YAML mapping"]),
]


@pytest.mark.parametrize("name, words", PIPELINE_ERRORS)
def test_bad_pipeline_is_one_error_line(corpus, tmp_path, capsys, name, words):
    path = corpus / "pipelines" / f"{name}.yaml"
    code, err = run_cli(capsys, "profiler", "info", corpus / "plate", "-p", path)
    one_error(code, err, *words, path.name)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "profiler", "extract", corpus / "plate", "-o", out, "-p", path, "--no-progress")
    one_error(code, err, *words)
    assert not out.exists()


def test_yaml_error_names_the_line(corpus, capsys):
    code, err = run_cli(capsys, "profiler", "info", corpus / "plate", "-p", corpus / "pipelines" / "tab_indent.yaml")
    assert code == 2 and "line 10" in err, err


def test_real_console_script_prints_one_line_and_exit_2(corpus):
    """The installed `profiler` command (a subprocess): one `error:` line, status 2, no traceback."""
    import shutil
    import subprocess

    exe = shutil.which("profiler", path=str(Path(sys.executable).parent)) or shutil.which("profiler")
    cmd = [exe] if exe else [sys.executable, "-m", "profiler.cli"]
    res = subprocess.run([*cmd, "info", str(corpus / "plate"), "-p", str(corpus / "pipelines" / "bounds_reversed.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr
    assert "threshold_bounds" in res.stderr and "bounds_reversed.yaml" in res.stderr


# ---------------------------------------------------------------------------------------------
# Model folders from another version
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("model_newer_format", ["model folder has format 2, this cellfusion reads format 1",
                            "written by cellfusion 9.0.0"]),
    ("model_old_layout", ["gbm.ubj is not listed in manifest.json (it lists: xgb_model.json)",
                          "written by cellfusion 0.0.1"]),
    ("model_no_files_key", ["manifest.json lists no model files", "records no cellfusion version"]),
    ("model_config_schema", ["gbm.json: model file has no n_features entry", "written by cellfusion 0.0.1"]),
])
def test_model_from_another_version_is_one_error_line(corpus, tmp_path, capsys, name, words):
    code, err = run_cli(capsys, "fusion", "predict", corpus / name, corpus / "profiles.parquet", "-o", tmp_path / "pred")
    one_error(code, err, *words)
    assert not (tmp_path / "pred").exists()


def test_illumination_skips_the_bad_images_of_a_plate(corpus, cases, caplog):
    """With illumination on, the plate-level functions are built from the readable, same-sized images:
    one bad file does not stop the run (its site gets its own record when processed)."""
    from profiler.config import load_pipeline
    from profiler.illum import plate_illumination
    from profiler.plate import discover

    cfg = load_pipeline(fast(corpus))
    scan = discover(corpus / "plate", cfg)
    with caplog.at_level(logging.WARNING):
        functions = plate_illumination(scan.complete_sites, cfg.channel_names, {"enabled": True})
    assert sorted(ch for _, ch in functions) == sorted(cfg.channel_names)
    assert all(fn.shape == (128, 128) for fn in functions.values())
    for name in ("truncated_tiff", "html_named_tif", "huge_image", "different_shapes"):
        assert Path(cases[name]["path"]).name in caplog.text, name
