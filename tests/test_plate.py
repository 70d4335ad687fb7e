"""Plate discovery presets, bad-input messages, platemap checks, `profiler info`, and the real
BBBC021 field with its incomplete site."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from profiler.cli import app
from profiler.config import load_pipeline
from cellfusion_core.errors import ConfigError, InputError
from profiler.plate import check_platemap, discover, normalize_well, read_image, read_platemap, read_site
from tests.conftest import require_shared

THREE = [{"name": "DNA", "file": "w1", "role": "nuclei"}, {"name": "Tubulin", "file": "w2", "role": "cells"},
         {"name": "Actin", "file": "w3"}]


def _cfg(layout, channels=THREE):
    return load_pipeline({"name": "t", "channels": channels, "layout": layout})


def _tif(path, shape=(16, 16), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full(shape, value, np.uint16))
    return path


def test_normalize_well():
    assert normalize_well("b2") == "B02" and normalize_well("B02") == "B02" and normalize_well("p24") == "P24"


def test_imagexpress_incomplete_and_unmatched(tmp_path):
    for w in ("w1", "w2", "w3"):
        _tif(tmp_path / f"P1_B02_s1_{w}0A1B2C3D-1111-2222-3333-444455556666.tif")
    _tif(tmp_path / "P1_B02_s2_w1.tif")
    _tif(tmp_path / "P1_B02_s2_w2.tif")
    _tif(tmp_path / "notes_image.tif")
    scan = discover(tmp_path, _cfg({"preset": "imagexpress"}))
    assert [s.key for s in scan.sites] == ["P1_B02_s1", "P1_B02_s2"]
    assert scan.sites[0].complete and scan.sites[1].missing == ["Actin"]
    assert [p.name for p in scan.unmatched] == ["notes_image.tif"]


def test_phenix(tmp_path):
    for ch in (1, 2, 3):
        _tif(tmp_path / "plateX" / f"r02c03f01p01-ch{ch}sk1fk1fl1.tiff")
        _tif(tmp_path / "plateX" / f"r02c03f01p02-ch{ch}sk1fk1fl1.tiff")
    chans = [{"name": "DNA", "file": "ch1", "role": "nuclei"}, {"name": "RNA", "file": "ch2", "role": "cells"},
             {"name": "Mito", "file": "ch3"}]
    scan = discover(tmp_path / "plateX", _cfg({"preset": "phenix"}, chans))
    assert [(s.plate, s.well, s.site) for s in scan.sites] == [("plateX", "B03", 1)]
    assert scan.sites[0].files["RNA"].name == "r02c03f01p01-ch2sk1fk1fl1.tiff"
    assert "other planes" in scan.notes[0]


def test_regex_and_missing_well_group(tmp_path):
    for ch in ("DAPI", "TUB", "ACT"):
        _tif(tmp_path / f"exp7--C05--f3--{ch}.tif")
    chans = [{"name": "DNA", "file": "DAPI", "role": "nuclei"}, {"name": "Tubulin", "file": "TUB", "role": "cells"},
             {"name": "Actin", "file": "ACT"}]
    scan = discover(tmp_path, _cfg({"preset": "regex",
                                    "pattern": r"^(?P<Plate>[^-]+)--(?P<Well>[A-P]\d+)--f(?P<Site>\d+)--(?P<Channel>\w+)\.tif$"},
                                   chans))
    assert [(s.plate, s.well, s.site, s.complete) for s in scan.sites] == [("exp7", "C05", 3, True)]
    with pytest.raises(ConfigError, match=r"no \(\?P<Well>…\) group"):
        discover(tmp_path, _cfg({"preset": "regex", "pattern": r"(?P<Plate>\w+)--(?P<Channel>\w+)"}, chans))
    with pytest.raises(ConfigError, match="unknown layout preset"):
        discover(tmp_path, _cfg({"preset": "operetta"}, chans))


def test_csv_preset(tmp_path):
    rows = []
    for site in (1, 2):
        row = {"Image_Metadata_Plate": "PL", "Image_Metadata_Well": "D4"}
        for name in ("DNA", "Tubulin", "Actin"):
            f = f"img_{site}_{name}.tif"
            if not (site == 2 and name == "Actin"):
                _tif(tmp_path / "raw" / f)
            row[f"Image_FileName_{name}"] = f
            row[f"Image_PathName_{name}"] = "raw"
        rows.append(row)
    rows.append({**rows[0], "Image_Metadata_Well": "E01", "Image_FileName_DNA": "gone.tif",
                 "Image_FileName_Tubulin": "gone.tif", "Image_FileName_Actin": "gone.tif"})
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    scan = discover(tmp_path, _cfg({"preset": "csv", "csv": "meta.csv"}))
    assert [(s.well, s.site, s.missing) for s in scan.sites] == [("D04", 1, []), ("D04", 2, ["Actin"])]
    assert "1 CSV rows left out" in scan.notes[0]


def test_truncated_tiff_and_shape_mismatch(tmp_path):
    good = _tif(tmp_path / "P_A01_s1_w1.tif", shape=(64, 64))
    bad = tmp_path / "P_A01_s1_w2.tif"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputError) as exc:
        read_image(bad)
    assert "P_A01_s1_w2.tif" in str(exc.value) and "truncated" in str(exc.value)
    _tif(bad, shape=(32, 64))
    _tif(tmp_path / "P_A01_s1_w3.tif", shape=(64, 64))
    site = discover(tmp_path, _cfg({"preset": "imagexpress"})).sites[0]
    with pytest.raises(InputError, match=r"P_A01_s1_w2.tif \(Tubulin\): 32×64"):
        read_site(site)


def test_platemap_checks(tmp_path, caplog):
    pm_path = tmp_path / "platemap.csv"
    pm_path.write_text("well,compound,concentration,control\nB02,DMSO,0,negative\nB03,taxol,1,\nB04,x,1,\n")
    pm = read_platemap(pm_path)
    with pytest.raises(InputError) as exc:
        check_platemap(pm, {"B02", "B05"}, pm_path)
    assert "platemap.csv" in str(exc.value) and "B05" in str(exc.value)
    with caplog.at_level(logging.WARNING):
        extra = check_platemap(pm, {"B02", "B03"}, pm_path)
    assert extra == ["B04"] and "B04" in caplog.text and "platemap.csv" in caplog.text
    assert "Metadata_Batch" not in pm
    pm_path.write_text("well,compound,control,batch\nB02,DMSO,negative,Week1\nB03,taxol,,Week1\n")
    assert read_platemap(pm_path)["Metadata_Batch"].tolist() == ["Week1", "Week1"]


def test_real_field_incomplete_site_and_info():
    field = require_shared("bbbc021", "fields")
    cfg = load_pipeline("bbbc021")
    scan = discover(field, cfg)
    by_site = {s.site: s for s in scan.sites}
    assert by_site[1].complete and by_site[3].missing == ["Actin"]
    res = CliRunner().invoke(app, ["info", str(field), "--pipeline", "bbbc021"])
    assert res.exit_code == 0, res.output
    assert "Week2_180607_B02_s3: missing channel(s) Actin" in res.output
    # the metadata-CSV preset on the same folder: BBBC021_v1_image.csv describes the whole screen
    csv = require_shared("bbbc021", "BBBC021_v1_image.csv.gz")
    cfg_csv = load_pipeline({"name": "b", "channels": [c.__dict__ for c in cfg.channels],
                             "layout": {"preset": "csv", "csv": str(csv)}})
    scan_csv = discover(field, cfg_csv)
    assert [(s.plate, s.well, s.site, s.missing) for s in scan_csv.sites] == [
        ("Week2_24381", "B02", 1, []), ("Week2_24381", "B02", 3, ["Actin"])]


def test_real_field_extract_processes_complete_sites(tmp_path):
    """s3 (no actin) is reported incomplete with the channel named; s1 is processed, with
    illumination functions, QC columns and an overlay."""
    field = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    from profiler.extract import extract

    plate = tmp_path / "plate"
    plate.mkdir()
    for f in field.iterdir():
        (plate / f.name).symlink_to(f)
        if "_s1_" in f.name:  # a second well (the field rolled sideways) so that profiles can be built
            tifffile.imwrite(plate / f.name.replace("_B02_", "_C03_"), np.roll(tifffile.imread(f), 400, axis=1))
    (plate / "platemap.csv").write_text("well,compound,concentration,control\nB02,DMSO,0,negative\n"
                                        "C03,taxol,1,\n")
    # two wells, one of them DMSO: too few controls for the bbbc021 preset's typical-variation step,
    # so this test profiles with the default recipe
    pipeline = load_pipeline("bbbc021").to_dict()
    pipeline["profiles"] = {"preset": "default"}
    out = extract(plate, tmp_path / "out", pipeline=pipeline, workers=0, progress=False, overlays=True)
    img = pd.read_parquet(out / "image.parquet")
    img = img[img["Metadata_Well"] == "B02"].set_index("Metadata_Site")
    assert img.loc[3, "Metadata_Status"] == "incomplete" and "Actin" in img.loc[3, "Metadata_Reason"]
    assert img.loc[1, "Metadata_Status"] == "ok" and img.loc[1, "Count_Cells"] > 100
    assert "ImageQuality_PowerLogLogSlope_DAPI" in img.columns and "Metadata_QC_Outlier" in img.columns
    cells = pd.read_parquet(out / "single_cell.parquet")
    assert (cells["Cells_Parent_Nuclei"] == cells["Metadata_ObjectNumber"]).all()
    # the shipped pipeline measures all eight families in every compartment (Intensity also writes
    # Location_CenterMassIntensity_*, so the Location family is recognised by Location_Center_X)
    for mark in ("AreaShape_", "Intensity_", "Texture_", "Granularity_", "RadialDistribution_", "Correlation_",
                 "Neighbors_", "Location_Center_X"):
        for comp in ("Nuclei", "Cells", "Cytoplasm"):
            assert any(c.startswith(f"{comp}_{mark}") for c in cells.columns), f"no {comp}_{mark}* column"
    assert (out / "overlays" / "Week2_180607_B02_s1.png").is_file()
    man = json.loads((out / "manifest.json").read_text())
    files = man["extra"]["illumination"]["files"] if "extra" in man else man["illumination"]["files"]
    assert set(files) == {"Week2_180607/DAPI", "Week2_180607/Tubulin", "Week2_180607/Actin"}
    fn = np.load(out / files["Week2_180607/DAPI"])
    assert fn.shape == (1024, 1280) and fn.min() >= 1.0 - 1e-6
