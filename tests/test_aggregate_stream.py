"""The streaming per-well aggregation (profiler.profiles.aggregate_stream) equals pycytominer's aggregate."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiler.profiles import _median_kernels as kern
from profiler.profiles import aggregate_stream as ags
from profiler.profiles.aggregate_stream import aggregate_parquet
from cellfusion_core.errors import ConfigError, InputError
from profiler.profiles import aggregate

STRATA = ["Metadata_Plate", "Metadata_Well"]
# cells per well: odd and even counts, a single cell, two cells
COUNTS = {("P1", "A01"): 7, ("P1", "A02"): 10, ("P1", "B01"): 1, ("P1", "B02"): 2,
          ("P2", "A01"): 25, ("P2", "A02"): 4, ("P2", "C03"): 13}


def plate_order_cells(seed: int = 0) -> pd.DataFrame:
    """Cells in plate order (plate, well, site) with NaNs, an all-NaN column, int and bool columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for (plate, well), n in COUNTS.items():
        for i in range(n):
            rows.append({"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": 1 + i % 3,
                         "Metadata_Compound": f"cpd-{well}", "Metadata_ObjectNumber": i + 1})
    df = pd.DataFrame(rows)
    n = len(df)
    df["Metadata_Mixed"] = np.where(df["Metadata_Well"] == "A02", df["Metadata_Site"].astype(str), "x")
    df["Cells_AreaShape_Area"] = rng.integers(50, 60, n)                 # int64, many ties
    df["Cells_Intensity_Mean_DNA"] = rng.normal(0.3, 0.1, n)             # float64
    df.loc[rng.random(n) < 0.3, "Cells_Intensity_Mean_DNA"] = np.nan
    df["Cells_Texture_F_DNA"] = rng.normal(5, 2, n).astype("float32")    # float32
    df["Cells_AllNaN"] = np.nan                                          # all-NaN column
    df["Cells_Neighbors_Touching"] = rng.random(n) < 0.4                 # bool
    df["Cells_HalfNaN"] = rng.standard_cauchy(n)                         # heavy tails, NaN in one well
    df.loc[df["Metadata_Well"] == "A02", "Cells_HalfNaN"] = np.nan
    df["Cells_Location_Center_X"] = rng.uniform(0, 100, n)               # position: not aggregated
    return df


def write_sites(df: pd.DataFrame, folder, *, row_group_size: int | None = None) -> list:
    """One file per (plate, well, site), named in plate order, like profiler extract's partitions."""
    folder.mkdir(exist_ok=True)
    files = []
    for i, (_, part) in enumerate(df.groupby(["Metadata_Plate", "Metadata_Well", "Metadata_Site"], sort=False)):
        files.append(folder / f"site-{i:04d}.parquet")
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), files[-1], row_group_size=row_group_size)
    return files


def reference(df: pd.DataFrame, op: str) -> pd.DataFrame:
    ref = df.copy()
    ref["Cells_Neighbors_Touching"] = ref["Cells_Neighbors_Touching"].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return aggregate(ref, operation=op).sort_values(STRATA).reset_index(drop=True)


def assert_same(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(ours[STRATA].itertuples(index=False)) == list(ref[STRATA].itertuples(index=False))
    feats = [c for c in ref if not c.startswith("Metadata_")]
    assert [c for c in ours if not c.startswith("Metadata_")] == feats
    assert (ours[feats].dtypes == "float64").all()
    for f in feats:
        a, b = ours[f].to_numpy(float), ref[f].to_numpy(float)
        rtol = 1e-6 if f == "Cells_Texture_F_DNA" else 1e-12  # pandas averages float32 middles in float32
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0, equal_nan=True, err_msg=f)
    assert list(ours["Metadata_Object_Count"]) == list(ref["Metadata_Object_Count"])
    assert set(c for c in ours if c.startswith("Metadata_")) == set(c for c in ref if c.startswith("Metadata_"))
    assert list(ours["Metadata_Compound"]) == list(ref["Metadata_Compound"])


@pytest.mark.parametrize("op", ["median", "mean"])
def test_stream_equals_pycytominer_on_site_files(tmp_path, op):
    df = plate_order_cells()
    files = write_sites(df, tmp_path / "single_cell")
    assert len(files) > len(COUNTS)  # wells split across several files
    ours = aggregate_parquet(tmp_path / "single_cell", operation=op)
    assert ours.attrs["engine"] == "stream"
    ref = reference(df, op)
    assert_same(ours, ref)
    # varying metadata are dropped, constant ones carried over; positions are not aggregated
    assert "Metadata_Site" not in ours and "Metadata_Mixed" not in ours and "Cells_Location_Center_X" not in ours
    assert ours["Cells_AllNaN"].isna().all()
    assert ours.loc[ours["Metadata_Well"] == "A02", "Cells_HalfNaN"].isna().all()
    assert ours["Cells_HalfNaN"].notna().sum() == len(COUNTS) - 2  # A02 on both plates


@pytest.mark.parametrize("small_reads", [False, True])
def test_stream_one_file_wells_across_row_groups_and_column_blocks(tmp_path, monkeypatch, small_reads):
    if small_reads:  # wells straddle reads (a well cut into up to 7 pieces)
        monkeypatch.setattr(ags, "_TASK_ROWS", 5)
    df = plate_order_cells(seed=1)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "cells.parquet", row_group_size=4)
    assert pq.ParquetFile(tmp_path / "cells.parquet").num_row_groups > len(COUNTS)
    # a tiny memory budget: one feature column per read
    ours = aggregate_parquet(tmp_path / "cells.parquet", memory_mb=1e-5)
    assert ours.attrs["engine"] == "stream"
    assert_same(ours, reference(df, "median"))
    # a list of files, several row groups each, wells straddling files
    parts = [tmp_path / f"p{i}.parquet" for i in range(3)]
    for p, idx in zip(parts, np.array_split(np.arange(len(df)), 3)):
        pq.write_table(pa.Table.from_pandas(df.iloc[idx], preserve_index=False), p, row_group_size=5)
    ours = aggregate_parquet([str(p) for p in parts], engine="stream")
    assert_same(ours, reference(df, "median"))


def test_non_adjacent_well_falls_back_to_duckdb(tmp_path):
    df = plate_order_cells(seed=2)
    files = write_sites(df, tmp_path / "sc")
    # move the first site of P1/A01 to the end: A01's cells are no longer contiguous in file order
    files[0].rename(tmp_path / "sc" / "site-9999.parquet")
    with pytest.raises(InputError, match="not contiguous"):
        aggregate_parquet(tmp_path / "sc", engine="stream")
    for op in ("median", "mean"):
        ours = aggregate_parquet(tmp_path / "sc", operation=op)
        assert ours.attrs["engine"] == "duckdb"
        assert_same(ours, reference(df, op))
    # shuffled rows inside one file: detected in the first row group
    pq.write_table(pa.Table.from_pandas(df.sample(frac=1, random_state=0), preserve_index=False),
                   tmp_path / "shuffled.parquet")
    with pytest.raises(InputError, match="not contiguous"):
        aggregate_parquet(tmp_path / "shuffled.parquet", engine="stream")
    assert aggregate_parquet(tmp_path / "shuffled.parquet").attrs["engine"] == "duckdb"


def test_engines_agree_and_bad_input(tmp_path):
    df = plate_order_cells(seed=3)
    write_sites(df, tmp_path / "sc")
    a = aggregate_parquet(tmp_path / "sc", engine="stream")
    b = aggregate_parquet(tmp_path / "sc", engine="duckdb")
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[["Metadata_Object_Count"]], b[["Metadata_Object_Count"]])
    feats = [c for c in a if not c.startswith("Metadata_")]
    np.testing.assert_array_equal(a[feats].to_numpy(), b[feats].to_numpy())
    with pytest.raises(ConfigError, match="unknown aggregate engine"):
        aggregate_parquet(tmp_path / "sc", engine="spark")
    with pytest.raises(InputError, match="lacks the feature columns"):
        aggregate_parquet(tmp_path / "sc", features=["Cells_Nope"])
    # a file without a feature column the first file has: named
    pq.write_table(pa.Table.from_pandas(df.drop(columns=["Cells_AllNaN"]).iloc[:3], preserve_index=False),
                   tmp_path / "sc" / "zz.parquet")
    with pytest.raises(InputError, match=r"zz.parquet.*lacks the columns \['Cells_AllNaN'\]"):
        aggregate_parquet(tmp_path / "sc")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_kernel_exact(dtype):
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 4, 47, 48, 49, 50, 101, 1000, 3001):
        a = np.column_stack([rng.normal(100, 20, n), rng.integers(0, 5, n), rng.standard_cauchy(n),
                             rng.choice([-1e30, 1e30, 0, 1, 2, -0.0], n), np.full(n, np.inf),
                             np.where(rng.random(n) < 0.5, -np.inf, rng.normal(size=n)), np.full(n, np.nan),
                             np.where(rng.random(n) < 0.4, np.nan, rng.normal(size=n))]).astype(dtype)
        a = np.asfortranarray(a)
        cuts = np.unique(np.r_[0, rng.integers(0, n + 1, 3), n])
        starts, stops = cuts[:-1], cuts[1:]
        got = kern.medians(a, starts, stops)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.array([np.nanmedian(a[s:e].astype(np.float64), axis=0) for s, e in zip(starts, stops)])
        np.testing.assert_array_equal(got, want, err_msg=f"n={n}")
        sums, counts = kern.sums_counts(a[:, [0, 1, 7]], starts, stops)
        with np.errstate(invalid="ignore"):
            mean = sums / counts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.array([np.nanmean(a[s:e][:, [0, 1, 7]].astype(np.float64), axis=0)
                             for s, e in zip(starts, stops)])
        np.testing.assert_allclose(mean, want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_kernel_exact_hard_columns(dtype):
    """Runs long enough for both counting levels, the straddled thresholds, the sample's failures."""
    rng = np.random.default_rng(5)
    for trial in range(12):
        n = int(rng.choice([33, 64, 65, 200, 999, 1000, 1300, 4096, 5201, 20000]))
        i = np.arange(n)
        cols = [
            rng.normal(100, 20, n),                                  # continuous
            rng.integers(0, 64, n),                                  # 64 distinct values: ties
            np.where(rng.random(n) < 0.97, 7.0, rng.normal(size=n)),  # one value almost everywhere
            np.sort(rng.normal(size=n)),                             # sorted: the strided sample is exact
            np.sort(rng.normal(size=n))[::-1],
            (i % 2) * 1e6 + rng.normal(size=n),                      # period 2: a strided sample sees one mode
            np.where(i % 32 == 16, 1e9, rng.normal(size=n)),         # outliers exactly where the sample looks
            np.where(rng.random(n) < 0.95, np.nan, rng.normal(size=n)),  # mostly NaN
            np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 3, n)),
            rng.choice([-np.inf, np.inf, -0.0, 0.0, 1.0], n),
            np.r_[np.full(n // 2, -1.0), np.full(n - n // 2, 1.0)],  # even count: the middles differ
            rng.standard_cauchy(n) * 1e30,
            np.full(n, np.nan),
        ]
        a = np.asfortranarray(np.column_stack(cols).astype(dtype))
        cuts = np.unique(np.r_[0, rng.integers(0, n + 1, 2), n])
        got = kern.medians(a, cuts[:-1], cuts[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.array([np.nanmedian(a[s:e].astype(np.float64), axis=0) for s, e in zip(cuts[:-1], cuts[1:])])
        np.testing.assert_array_equal(got, want, err_msg=f"n={n} cuts={cuts}")
        # a C-ordered block gives the same (copied to column-major)
        np.testing.assert_array_equal(kern.medians(np.ascontiguousarray(a), cuts[:-1], cuts[1:]), want)


def test_stream_reads_each_stored_type_as_pandas_does(tmp_path, monkeypatch):
    """Columns are aggregated on the buffers Arrow decodes them into (read-only, no copy), float16 as
    float32, integers and booleans as float64, nulls as NaN; reads of a few columns at a time
    (the per-read byte cap) give the same values as whole-width reads."""
    rng = np.random.default_rng(7)
    df = plate_order_cells(seed=4)
    n = len(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    extra = {
        "Cells_Half_F": pa.array(rng.normal(10, 3, n).astype(np.float16)),
        "Cells_Int32_N": pa.array(rng.integers(0, 9, n).astype(np.int32), mask=rng.random(n) < 0.2),
        "Cells_UInt8_N": pa.array(rng.integers(0, 200, n).astype(np.uint8)),
        "Cells_Float_Nulls": pa.array(rng.normal(size=n), mask=rng.random(n) < 0.3),
    }
    for name, arr in extra.items():
        table = table.append_column(name, arr)
    pq.write_table(table, tmp_path / "cells.parquet", row_group_size=9)
    whole = aggregate_parquet(tmp_path / "cells.parquet")
    # two columns per read (the 9-row row groups make one read task of every row, float64 blocks)
    monkeypatch.setattr(ags, "_BLOCK_BYTES", 2 * n * 8)
    narrow = aggregate_parquet(tmp_path / "cells.parquet")
    pd.testing.assert_frame_equal(whole, narrow)
    cells = table.to_pandas()
    for name in extra:
        values = cells[name].astype("float64")  # nulls → NaN
        want = values.groupby([cells[s] for s in STRATA]).median().to_numpy()
        np.testing.assert_array_equal(whole[name].to_numpy(), want, err_msg=name)
