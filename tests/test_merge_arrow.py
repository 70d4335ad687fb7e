"""The streaming merge of ``profiler extract`` in Arrow gives the table the pandas merge gave.

``stream_single_cell`` joins the platemap, scores outliers and casts to the plate's schema in Arrow,
reading the next sites on a thread while it writes. These tests hold it to the former pandas path
(``part.merge(platemap)`` → ``score_cells`` → ``pa.Table.from_pandas(…, schema=schema)``), written
out here as the reference, on sites whose types differ (int in one site, float in another), with
missing values, several row groups and every read-ahead depth; and the outlier sample and the
MinCovDet thread setting to what they replaced.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import profiler.extract as ex
from cellfusion_core.errors import InputError
from cellfusion_core.names import PLATE, SITE, WELL, is_metadata
from profiler import outliers as ol

FEATS = [f"Cells_Intensity_F{j:02d}_DNA" for j in range(12)]


def _site(well: str, site: int, n: int, seed: int, *, int_feature: bool = False, drop: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.lognormal(size=(n, len(FEATS))), columns=FEATS)
    df.iloc[rng.integers(0, n, 3), 2] = np.nan                      # missing values → nulls
    if int_feature:                                                 # int here, float in other sites
        df[FEATS[5]] = rng.integers(0, 50, n)
    if drop:
        df = df.drop(columns=[drop])
    df.insert(0, "ObjectNumber", np.arange(1, n + 1))
    df.insert(0, SITE, site)
    df.insert(0, WELL, well)
    df.insert(0, PLATE, "P1")
    df["Cells_Location_Center_X"] = rng.uniform(0, 100, n)
    return df


@pytest.fixture
def sites(tmp_path):
    d = tmp_path / "sites"
    d.mkdir()
    specs = [("B02", 1, 40, {}), ("B02", 2, 35, {"int_feature": True}), ("B03", 1, 50, {}),
             ("B03", 2, 1, {}), ("B04", 1, 45, {}), ("B04", 2, 30, {"int_feature": True})]
    paths = []
    for i, (w, s, n, kw) in enumerate(specs):
        p = d / f"P1_{w}_s{s}.parquet"
        _site(w, s, n, seed=i, **kw).to_parquet(p, index=False)
        paths.append(p)
    return paths


@pytest.fixture
def platemap():
    return pd.DataFrame({WELL: pd.Series(["B02", "B03", "B04", "B05"], dtype="str"),
                         "Metadata_Compound": pd.Series(["DMSO", "X", None, "Y"], dtype="str"),
                         "Metadata_Concentration": [0.0, 1.0, 5.0, 2.0],
                         "Metadata_Control": pd.Series(["negative", "", "", ""], dtype="str")})


def _pandas_reference(partitions, platemap, model):
    """The former merge: pandas left join, metadata first, scores appended, from_pandas to the schema."""
    schema = ex.merged_schema(partitions, platemap)
    if model is not None:
        n_meta = sum(is_metadata(f.name) for f in schema)
        schema = schema.insert(n_meta, pa.field(ol.SCORE, pa.float64())).insert(n_meta + 1, pa.field(ol.FLAG, pa.bool_()))
    tables, tally = [], ol.OutlierTally()
    for p in partitions:
        part = pd.read_parquet(p).merge(platemap, on=WELL, how="left")
        if model is not None:
            part[ol.SCORE], part[ol.FLAG] = ol.score_cells(model, part)
            tally.add(part, part[ol.FLAG].to_numpy())
        tables.append(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
    return pa.concat_tables(tables), tally


@pytest.mark.parametrize("read_ahead", [1, 2, 5])
def test_arrow_merge_equals_the_pandas_merge(sites, platemap, tmp_path, monkeypatch, read_ahead):
    sample = ol.sample_partitions(sites, FEATS, wells=None, max_cells=1000)
    model = ol.fit_outlier_model(sample, n_components=4, contamination=0.1)
    want, want_tally = _pandas_reference(sites, platemap, model)
    monkeypatch.setattr(ex, "ROW_GROUP_BYTES", 6000)     # several row groups, flushed mid-stream
    monkeypatch.setattr(ex, "MERGE_READ_AHEAD", read_ahead)
    out = tmp_path / f"out{read_ahead}"
    out.mkdir()
    tally = ol.OutlierTally()
    facts = ex.stream_single_cell(sites, out, platemap, None, outliers=model, tally=tally,
                                  schemas=ex.partition_schemas(sites))
    got = pq.read_table(out / "single_cell.parquet")
    assert got.schema.field(FEATS[5]).type == pa.float64()   # promoted: int in two sites, float in the others
    assert got.equals(want.cast(got.schema))
    assert got.column(FEATS[2]).null_count == want.column(FEATS[2]).null_count > 0
    assert pq.ParquetFile(out / "single_cell.parquet").metadata.num_row_groups > 1
    assert facts["single_cell.parquet"] == {"rows": want.num_rows, "columns": len(want.schema)}
    assert tally.counts == want_tally.counts and tally.flagged == want_tally.flagged > 0


def test_arrow_merge_without_platemap_or_model(sites, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ex.stream_single_cell(sites, out, None, None)
    want = pa.concat_tables([pa.Table.from_pandas(pd.read_parquet(p), schema=ex.merged_schema(sites, None),
                                                  preserve_index=False) for p in sites])
    assert pq.read_table(out / "single_cell.parquet").equals(want)


def test_a_site_missing_a_column_gets_nulls(sites, platemap, tmp_path):
    # the pandas path stopped with a KeyError on such a site; its cells now carry nulls there
    odd = sites[0].with_name("P1_B05_s1.parquet")
    _site("B05", 1, 7, seed=9, drop=FEATS[7]).to_parquet(odd, index=False)
    out = tmp_path / "out"
    out.mkdir()
    ex.stream_single_cell([*sites, odd], out, platemap, None)
    got = pq.read_table(out / "single_cell.parquet").to_pandas()
    b05 = got[got[WELL] == "B05"]
    assert len(b05) == 7 and b05[FEATS[7]].isna().all() and b05[FEATS[6]].notna().all()
    assert (b05["Metadata_Compound"] == "Y").all()


def test_a_well_listed_twice_in_the_platemap_stops_the_merge_without_a_file(sites, platemap, tmp_path):
    twice = pd.concat([platemap, platemap.iloc[[1]]], ignore_index=True)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="lists well B03 more than once"):
        ex.stream_single_cell(sites, out, twice, None)
    assert not any(out.iterdir())


def test_arrow_matrix_equals_the_pandas_matrix():
    table = pa.table({"a": pa.array([1, None, 3], pa.int64()), "b": pa.array([0.5, np.nan, None]),
                      "c": pa.array([True, False, None]), "d": pa.array(["1.5", "x", None]),
                      "e": pa.array([1, 2, 3], pa.int8())})
    feats = ["a", "b", "c", "d", "e", "missing"]
    got = ol.arrow_matrix(table, feats)
    want = ol._matrix(table.to_pandas(), feats)
    np.testing.assert_array_equal(got, want)


def test_arrow_matrix_of_float_columns_is_the_column_by_column_matrix():
    # all-float64 tables (every site partition) go through one Arrow tensor copy: the same bits as the
    # per-column path, with nulls, NaN, −0.0 and several chunks; columns in the order asked
    part = pa.table({"a": pa.array([1.5, None, -0.0]), "b": pa.array([np.nan, 2.0, 1e-300]),
                     "c": pa.array([3.0, 4.0, 5.0])})
    table = pa.concat_tables([part, part.slice(1)])
    assert table["a"].num_chunks == 2
    feats = ["c", "a", "b"]
    got = ol.arrow_matrix(table, feats)
    want = ol._matrix(table.to_pandas(), feats)
    assert got.flags.writeable and got.flags.c_contiguous and got.dtype == np.float64
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
    assert ol.arrow_matrix(table.slice(0, 0), feats).shape == (0, 3)


def _sample_reference(partitions, features, wells, max_cells, seed):
    """The former sampler: every partition read whole with pandas, then filtered to ``wells``."""
    kept, keys = np.empty((0, len(features)), np.float32), np.empty(0)
    for i, p in enumerate(partitions):
        part = pd.read_parquet(p)
        if wells is not None:
            part = part[part[WELL].astype(str).isin(wells)]
        if not len(part):
            continue
        x = ol._matrix(part, features).astype(np.float32)
        kk = np.random.default_rng([seed, i]).random(len(part))
        kept, keys = np.vstack([kept, x]), np.concatenate([keys, kk])
        if len(keys) > max_cells:
            best = np.argpartition(keys, max_cells - 1)[:max_cells]
            best.sort()
            kept, keys = kept[best], keys[best]
    return pd.DataFrame(kept.astype(np.float64), columns=list(features))


@pytest.mark.parametrize("wells", [{"B02"}, {"B03", "B04"}, None])
def test_sample_reads_only_control_sites_and_draws_the_same_cells(sites, wells):
    for max_cells in (30, 1000):
        got = ol.sample_partitions(sites, [*FEATS, "Cells_Absent_F"], wells=wells, max_cells=max_cells, seed=3)
        want = _sample_reference(sites, [*FEATS, "Cells_Absent_F"], wells, max_cells, 3)
        pd.testing.assert_frame_equal(got, want)


def test_mincovdet_gives_the_same_bits_on_one_blas_thread_as_on_all():
    # fit_outlier_model runs MinCovDet under threadpool_limits(1): the premise is that this changes nothing
    from sklearn.covariance import MinCovDet
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    t = rng.standard_t(4, size=(2000, 40)) @ rng.normal(size=(40, 40))
    default = MinCovDet(random_state=0).fit(t)
    with threadpool_limits(limits=1, user_api="blas"):
        one = MinCovDet(random_state=0).fit(t)
    np.testing.assert_array_equal(default.location_, one.location_)
    np.testing.assert_array_equal(default.covariance_, one.covariance_)
    np.testing.assert_array_equal(default.support_, one.support_)


def test_a_kept_site_table_is_the_partition_read_back(small_plate, tmp_path):
    # with workers=0 extract keeps each site's table as it was written instead of reading it back:
    # it must be the very table read_partition gives (values, nulls, types, pandas metadata)
    import json

    from profiler.config import load_pipeline
    from profiler.extract import pipeline_hash, run_site
    from profiler.partitions import read_partition
    from profiler.plate import discover

    config = load_pipeline("example")
    site = discover(small_plate, config).complete_sites[0]
    entry = run_site(site, config, tmp_path / "sites", pipeline_hash(config), keep_table=True)
    assert entry["status"] == "ok"
    table = entry.pop("table")
    back = read_partition(tmp_path / "sites" / entry["partition"]["file"])
    assert table.equals(back, check_metadata=True) and table.num_rows == entry["partition"]["rows"]
    record = json.loads((tmp_path / "sites" / f"{entry['site']}.json").read_text())
    assert "table" not in record and record == json.loads(json.dumps(entry, default=str))
    assert "table" not in run_site(site, config, tmp_path / "again", pipeline_hash(config))


def test_site_tables_past_the_limit_keep_none():
    tables = {f"s{i}": pa.table({"x": np.arange(1000, dtype=np.float64)}) for i in range(4)}
    kept = ex.SiteTables(limit_bytes=20_000)
    for name, t in tables.items():
        kept.add(name, t)
        if name == "s1":
            assert list(kept.tables) == [ex.Path("s0"), ex.Path("s1")]
    assert kept.tables == {}  # 32 kB > 20 kB: the plate streams from disk, nothing half-kept
    kept.add("s4", tables["s0"])
    assert kept.tables == {}
