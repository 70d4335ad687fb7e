"""``profiler extract`` at plate scale: the streamed per-cell table, validation before any image is
read, nothing lost when the profile stage fails late, one run per output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pycytominer
import pytest

from conftest import example_pipeline, run_cli
from cellfusion_core.layout import EXTRACT_LOCK
from profiler.extract import extract, output_lock
from cellfusion_core.names import PLATE, WELL, profile_feature_columns

CONTROLS = ("B02", "B07", "B08")  # the DMSO wells of the small example plate


FAST = example_pipeline()  # AreaShape + Intensity: these tests are about the plate, not the features


@pytest.fixture(scope="module")
def reference(small_plate, tmp_path_factory) -> Path:
    return extract(small_plate, tmp_path_factory.mktemp("ref"), pipeline=FAST, workers=0, progress=False)


def copy_plate(src: Path, dst: Path, *, platemap: bool = True) -> Path:
    """A copy of the plate (file times kept, so finished partitions of ``src`` stay reusable)."""
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    if not platemap:
        (dst / "platemap.csv").unlink()
    return dst


def reuse_sites(reference: Path, out: Path) -> None:
    shutil.copytree(reference / "sites", out / "sites")


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture
def fast_cli(fast_pipeline) -> tuple[str, ...]:
    """Command-line runs use the two-family example pipeline too."""
    return ("-p", str(fast_pipeline), "--workers", "0", "--no-progress")


def test_single_cell_is_the_sites_in_plate_order_with_platemap_and_row_groups(small_plate, reference, monkeypatch,
                                                                             tmp_path):
    sc = pd.read_parquet(reference / "single_cell.parquet")
    parts = [pd.read_parquet(reference / "sites" / e["partition"]["file"])
             for e in (json.loads(p.read_text()) for p in sorted((reference / "sites").glob("*.json")))
             if e["partition"] and e["partition"]["rows"]]
    cells = pd.concat(parts, ignore_index=True)
    assert len(sc) == len(cells) and sc[WELL].is_monotonic_increasing
    for col in cells.columns:
        np.testing.assert_array_equal(sc[col].to_numpy(), cells[col].to_numpy(), err_msg=col)
    assert {"Metadata_Compound", "Metadata_Control"} <= set(sc.columns)
    meta = [c for c in sc.columns if c.startswith("Metadata_")]
    assert list(sc.columns[: len(meta)]) == meta  # metadata first
    # a small buffer gives one row group per flush, and the file reads the same
    import profiler.extract as ex

    monkeypatch.setattr(ex, "ROW_GROUP_BYTES", 50_000)
    out = tmp_path / "rg"
    reuse_sites(reference, out)
    extract(small_plate, out, pipeline=FAST, workers=0, progress=False)
    assert pq.ParquetFile(out / "single_cell.parquet").num_row_groups > 1
    pd.testing.assert_frame_equal(pd.read_parquet(out / "single_cell.parquet"), sc)
    assert manifest(out)["sites"]["reused"] == manifest(out)["sites"]["found"]


def test_single_cell_reads_as_one_table_in_pyarrow_duckdb_and_pycytominer(reference):
    path = reference / "single_cell.parquet"
    n = pq.ParquetFile(path).metadata.num_rows
    assert ds.dataset(path).count_rows() == n
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0] == n
    sc = pd.read_parquet(path)
    feats = profile_feature_columns(sc)[:20]
    from pycytominer.cyto_utils import load_profiles

    loaded = load_profiles(path)
    pd.testing.assert_frame_equal(loaded, sc)
    agg = pycytominer.aggregate(loaded, strata=[PLATE, WELL], features=feats, operation="median",
                                output_type=None)
    assert len(agg) == sc[WELL].nunique()


def test_profiles_equal_the_in_memory_pycytominer_recipe(reference):
    """The streaming profile stage gives what aggregating and normalizing in memory gives."""
    from profiler.profiles import build_profiles

    sc = pd.read_parquet(reference / "single_cell.parquet")
    expected = build_profiles(sc)
    got = pd.read_parquet(reference / "profiles.parquet")
    assert set(got.columns) == set(expected.columns)
    key = [PLATE, WELL]
    got = got.sort_values(key).reset_index(drop=True)[list(expected.columns)]
    expected = expected.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9, atol=1e-12)
    assert manifest(reference)["profiles"]["status"] == "ok"


def test_without_platemap_writes_cells_and_raw_aggregates_and_says_normalization_needs_one(
        small_plate, reference, tmp_path, capsys, fast_cli):
    plate = copy_plate(small_plate, tmp_path / "plate", platemap=False)
    out = tmp_path / "out"
    reuse_sites(reference, out)
    code, err = run_cli(capsys, "profiler", "extract", plate, "-o", out, *fast_cli)
    assert code == 0, err
    assert "platemap" in err and "profiler aggregate" in err
    m = manifest(out)
    assert m["profiles"]["normalized"] is False and m["profiles"]["status"] == "raw aggregates"
    prof = pd.read_parquet(out / "profiles.parquet")
    sc = pd.read_parquet(out / "single_cell.parquet")
    assert "Metadata_Compound" not in sc.columns
    feat = profile_feature_columns(prof)[0]
    well = prof[WELL].iloc[0]
    assert prof[feat].iloc[0] == pytest.approx(sc.loc[sc[WELL] == well, feat].median())  # raw, not normalized


def test_platemap_without_controls_is_refused_before_any_image_is_read(small_plate, tmp_path, capsys, fast_cli):
    plate = copy_plate(small_plate, tmp_path / "plate")
    pm = pd.read_csv(plate / "platemap.csv")
    pm["control"] = ""   # no marker, and no DMSO (or empty) compound: no control by the one rule (control_mask)
    pm["compound"] = pm["compound"].replace("DMSO", "Vehicle")
    pm.to_csv(plate / "platemap.csv", index=False)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "profiler", "extract", plate, "-o", out, *fast_cli)
    assert code == 2 and err.startswith("error:"), err
    assert "platemap.csv" in err.replace(" ", "") and "control" in err
    assert not (out / "sites").exists()  # nothing was processed


def test_too_few_controls_for_the_recipes_whitening_is_refused_up_front(small_plate, tmp_path, capsys):
    plate = copy_plate(small_plate, tmp_path / "plate")
    yml = tmp_path / "tvn.yaml"
    from profiler.config import load_pipeline
    import yaml

    spec = load_pipeline("example").to_dict()
    spec["profiles"] = {**spec.get("profiles", {}), "typical_variation": {"samples": "controls"}}
    yml.write_text(yaml.safe_dump(spec))
    pm = pd.read_csv(plate / "platemap.csv")  # two DMSO wells: typical variation needs >= 3
    pm.loc[pm["well"] == CONTROLS[0], ["compound", "control"]] = ["Enlargin", ""]
    pm.to_csv(plate / "platemap.csv", index=False)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "profiler", "extract", plate, "-o", out, "-p", yml, "--workers", "0", "--no-progress")
    assert code == 2 and "typical variation needs >= 3" in err, err
    assert not (out / "sites").exists()


def test_late_profile_failure_keeps_cells_image_table_and_manifest(small_plate, reference, tmp_path, capsys,
                                                                   fast_cli):
    """Every control site fails to read: the profile stage cannot normalize. Nothing computed is lost."""
    plate = copy_plate(small_plate, tmp_path / "plate")
    out = tmp_path / "out"
    reuse_sites(reference, out)
    for well in CONTROLS:
        for f in plate.glob(f"*_{well}_s1_w1.tif"):
            f.write_bytes(b"not a tiff")
    code, err = run_cli(capsys, "profiler", "extract", plate, "-o", out, *fast_cli)
    assert code == 2 and err.count("error:") == 1, err
    assert "profile stage failed" in err and "profiler aggregate" in err and "--platemap" in err
    assert (out / "single_cell.parquet").is_file() and (out / "image.parquet").is_file()
    assert not (out / "profiles.parquet").exists()
    m = manifest(out)
    assert m["profiles"]["status"].startswith("failed")
    assert m["outputs"]["single_cell.parquet"]["rows"] == len(pd.read_parquet(out / "single_cell.parquet"))
    image = pd.read_parquet(out / "image.parquet")
    assert set(image.loc[image["Metadata_Status"] == "error", WELL]) == set(CONTROLS)
    # the command the message names rebuilds the profiles once the cause is fixed (here: normalize to all wells)
    code, err = run_cli(capsys, "profiler", "aggregate", out / "single_cell.parquet", "-o", tmp_path / "again",
                        "--platemap", plate / "platemap.csv", "--pipeline", "example", "--samples", "all",
                        "--allow-unimaged-wells")
    assert code == 0, err
    assert len(pd.read_parquet(tmp_path / "again" / "profiles.parquet")) == len(image) - len(CONTROLS)


def test_a_second_run_into_the_same_folder_is_refused_and_a_dead_lock_holder_frees_it(small_plate, tmp_path, capsys,
                                                                                      fast_cli):
    out = tmp_path / "out"
    with output_lock(out):
        code, err = run_cli(capsys, "profiler", "extract", small_plate, "-o", out, *fast_cli)
    assert code == 2 and "another `profiler extract` is writing to this folder" in err, err
    assert (out / EXTRACT_LOCK).is_file()  # left behind, but not held: the next run goes ahead
    with output_lock(out):
        pass


def test_output_path_that_is_a_file_or_read_only_is_refused(small_plate, tmp_path, capsys, fast_cli):
    f = tmp_path / "file"
    f.write_text("x")
    code, err = run_cli(capsys, "profiler", "extract", small_plate, "-o", f, *fast_cli)
    assert code == 2 and "exists and is not a folder" in err, err
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write to read-only folders (root)")
        code, err = run_cli(capsys, "profiler", "extract", small_plate, "-o", ro / "out", *fast_cli)
        assert code == 2 and "not writable" in err, err
    finally:
        ro.chmod(0o755)


def test_disk_full_during_the_merge_leaves_no_partial_table_and_keeps_the_sites(small_plate, reference, tmp_path,
                                                                                 capsys, monkeypatch, fast_cli):
    import errno

    import pyarrow.parquet as pqm

    out = tmp_path / "out"
    reuse_sites(reference, out)
    real = pqm.ParquetWriter.write_table
    calls = {"n": 0}

    def full(self, table, *a, **kw):  # the disk fills while the per-cell table is written
        if ".single_cell.parquet." not in str(self.where):
            return real(self, table, *a, **kw)
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pqm.ParquetWriter, "write_table", full)
    code, err = run_cli(capsys, "profiler", "extract", small_plate, "-o", out, *fast_cli)
    assert calls["n"] >= 1
    assert code == 2 and err.count("error:") == 1 and "No space left on device" in err and "rerun" in err, err
    assert not (out / "single_cell.parquet").exists() and not list(out.glob(".*.tmp"))
    assert len(list((out / "sites").glob("*.json"))) == len(list((reference / "sites").glob("*.json")))
    monkeypatch.setattr(pqm.ParquetWriter, "write_table", real)
    extract(small_plate, out, pipeline=FAST, workers=0, progress=False)  # space freed: the rerun completes
    pd.testing.assert_frame_equal(pd.read_parquet(out / "single_cell.parquet"),
                                  pd.read_parquet(reference / "single_cell.parquet"))
