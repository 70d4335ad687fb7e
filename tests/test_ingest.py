"""profiler.ingest: CellProfiler CSV folders and ExportToDatabase SQLite (both forms) → per-cell table."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pycytominer
import pytest

from conftest import require_shared
from cellfusion_core.errors import InputError
from profiler.ingest import ingest, read_cellprofiler_csv, read_cellprofiler_sqlite
from cellfusion_core.names import profile_feature_columns
from profiler.profiles import aggregate


def test_jump_csv_aggregates_equal_pycytominer():
    folder = require_shared("jump_target2_cells")
    cells = read_cellprofiler_csv(folder)
    assert set(cells["Metadata_Well"]) == {"A01", "A02"}
    assert {"Cells_AreaShape_Area", "Cytoplasm_AreaShape_Area", "Nuclei_AreaShape_Area"} <= set(cells.columns)
    # each cell's cytoplasm and nucleus are the ones CellProfiler linked to it
    cyto = pd.read_csv(folder / "BR00121431-A01-1" / "Cytoplasm.csv", usecols=["ObjectNumber", "Parent_Cells", "Parent_Nuclei"])
    a01 = cells[cells["Metadata_Well"] == "A01"]
    assert len(a01) == len(cyto.merge(pd.Series(a01["Metadata_ObjectNumber"], name="Parent_Cells")))
    ours = aggregate(cells).sort_values("Metadata_Well").reset_index(drop=True)
    ref = pycytominer.aggregate(cells, strata=["Metadata_Plate", "Metadata_Well"], features="infer",
                                operation="median", output_type=None).sort_values("Metadata_Well").reset_index(drop=True)
    feats = profile_feature_columns(ref)  # position/numbering columns are not aggregated
    assert len(feats) > 5000 and [c for c in ours.columns if not c.startswith("Metadata_")] == feats
    np.testing.assert_allclose(ours[feats].to_numpy(float), ref[feats].to_numpy(float), rtol=1e-9, equal_nan=True)


def test_csv_objects_not_in_image_table(tmp_path):
    src = require_shared("jump_target2_cells", "BR00121431-A01-1")
    site = tmp_path / "site"
    shutil.copytree(src, site)
    nuc = pd.read_csv(site / "Nuclei.csv")
    nuc.loc[0, "ImageNumber"] = 99
    nuc.to_csv(site / "Nuclei.csv", index=False)
    with pytest.raises(InputError, match=r"Nuclei rows refer to ImageNumber\(s\) \[99\]"):
        read_cellprofiler_csv(site)
    out = tmp_path / "out"
    with pytest.raises(InputError):
        ingest(site, out)
    assert not (out / "single_cell.parquet").exists()


def _image():
    return pd.DataFrame({"ImageNumber": [1, 2], "Image_Metadata_Plate": ["P1", "P1"],
                         "Image_Metadata_Well": ["A1", "B2"], "Image_Metadata_Site": [1, 1]})


def _objects(rng, n=5):
    rows = []
    for img in (1, 2):
        for o in range(1, n + 1):
            rows.append({"ImageNumber": img, "ObjectNumber": o})
    df = pd.DataFrame(rows)
    for comp in ("Cells", "Cytoplasm", "Nuclei"):
        df[f"{comp}_AreaShape_Area"] = rng.uniform(10, 100, len(df))
        df[f"{comp}_Intensity_MeanIntensity_DNA"] = rng.uniform(0, 1, len(df))
    return df


def _write_single(path, obj, prefix=""):
    with sqlite3.connect(path) as con:
        _image().to_sql(f"{prefix}Per_Image", con, index=False)
        obj.to_sql(f"{prefix}Per_Object", con, index=False)


def _write_per_object(path, obj, prefix=""):
    with sqlite3.connect(path) as con:
        _image().to_sql(f"{prefix}Per_Image", con, index=False)
        for comp in ("Cells", "Cytoplasm", "Nuclei"):
            t = obj[["ImageNumber"] + [c for c in obj if c.startswith(comp)]].copy()
            t[f"{comp}_Number_Object_Number"] = obj["ObjectNumber"]
            if comp == "Cytoplasm":
                t["Cytoplasm_Parent_Cells"] = obj["ObjectNumber"]
                t["Cytoplasm_Parent_Nuclei"] = obj["ObjectNumber"]
            if comp == "Cells":
                t["Cells_Parent_Nuclei"] = obj["ObjectNumber"]
            t.to_sql(f"{prefix}Per_{comp}", con, index=False)


def test_sqlite_both_forms_agree(tmp_path):
    obj = _objects(np.random.default_rng(0))
    _write_single(tmp_path / "single.sqlite", obj)
    _write_per_object(tmp_path / "per.sqlite", obj, prefix="MyExpt_")
    a = read_cellprofiler_sqlite(tmp_path / "single.sqlite")
    b = read_cellprofiler_sqlite(tmp_path / "per.sqlite")
    assert len(a) == len(b) == 10
    assert list(a["Metadata_Well"].unique()) == ["A01", "B02"]
    for col in ("Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA", "Cytoplasm_AreaShape_Area"):
        np.testing.assert_allclose(a[col], b[col])
        np.testing.assert_allclose(a[col], obj[col])


def test_sqlite_bad_input(tmp_path):
    obj = _objects(np.random.default_rng(1))
    obj.loc[2, "ImageNumber"] = 7
    _write_single(tmp_path / "bad.sqlite", obj)
    with pytest.raises(InputError, match="not in the image table"):
        read_cellprofiler_sqlite(tmp_path / "bad.sqlite")
    obj = _objects(np.random.default_rng(1))
    obj["Cells_AreaShape_Area"] = obj["Cells_AreaShape_Area"].astype(object)
    obj.loc[0, "Cells_AreaShape_Area"] = "oops"
    _write_single(tmp_path / "text.sqlite", obj)
    with pytest.raises(InputError, match="non-numeric feature columns"):
        read_cellprofiler_sqlite(tmp_path / "text.sqlite")
    obj = _objects(np.random.default_rng(1))
    obj.loc[0, "Nuclei_AreaShape_Area"] = np.inf
    _write_single(tmp_path / "inf.sqlite", obj)
    with pytest.raises(InputError, match="infinite values"):
        read_cellprofiler_sqlite(tmp_path / "inf.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError):
        read_cellprofiler_sqlite(tmp_path / "junk.sqlite")


def test_ingest_with_platemap(tmp_path):
    obj = _objects(np.random.default_rng(2))
    _write_single(tmp_path / "db.sqlite", obj)
    pm = tmp_path / "platemap.csv"
    pm.write_text("well,compound,concentration,control\nA01,DMSO,0,negative\nB02,X,1,\n")
    out = ingest(tmp_path / "db.sqlite", tmp_path / "out", platemap=pm)
    cells = pd.read_parquet(out / "single_cell.parquet")
    assert set(cells["Metadata_Compound"]) == {"DMSO", "X"}
    assert (out / "manifest.json").is_file()
    pm.write_text("well,compound\nA01,DMSO\n")
    with pytest.raises(InputError, match="missing from the platemap"):
        ingest(tmp_path / "db.sqlite", tmp_path / "out2", platemap=pm)
    assert not (tmp_path / "out2" / "single_cell.parquet").exists()
