"""The plate-level fast paths of ``profiler extract`` give the very bits of the straightforward code.

Each fast path is compared with the reference it replaces, on random and edge-case inputs:
``io.arrow_table`` / ``io.write_parquet`` with ``pa.Table.from_pandas`` / ``DataFrame.to_parquet``,
the outlier model's column medians, matrices and MinCovDet with NumPy's ``nanmedian``, the
per-column conversion and scikit-learn's ``MinCovDet``, the profile steps with their former pandas
code, and ``gc_frozen`` leaves the collector as it found it.
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cellfusion_core import io
from profiler import outliers as ol
from profiler.nanstats import nanmedian_columns, nanpercentile_columns


# ---------------------------------------------------------------------------------------------
# io.arrow_table / io.write_parquet

def _frame(rng: np.random.Generator, n: int, *, nan_share: float = 0.1, seed_cols: int = 40) -> pd.DataFrame:
    cols: dict[str, object] = {
        "Metadata_Plate": pd.array([f"P{i % 3}" if i % 7 else None for i in range(n)], dtype="string"),
        "Metadata_Well": pd.array([f"B{i % 12:02d}" for i in range(n)], dtype="string"),
        "Metadata_Site": rng.integers(1, 10, n),
        "ObjectNumber": np.arange(1, n + 1),
    }
    for j in range(seed_cols):
        x = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
        x[rng.random(n) < nan_share] = np.nan
        if j % 9 == 0:
            x[:] = np.nan  # an all-NaN column
        if j % 11 == 0:
            x = np.round(x)  # ties
        cols[f"Cells_F_{j}"] = x
    cols["Cells_Small_f32"] = rng.normal(size=n).astype(np.float32)
    cols["Cells_U8"] = rng.integers(0, 255, n).astype(np.uint8)
    cols["Cells_I32"] = rng.integers(-5, 5, n).astype(np.int32)
    cols["Cells_Flag"] = rng.random(n) < 0.5
    cols["Cells_Inf"] = np.where(rng.random(n) < 0.2, np.inf, -0.0)
    return pd.DataFrame(cols)


def _same_table(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.equals(b)
    assert [c.null_count for c in a.columns] == [c.null_count for c in b.columns]


@pytest.mark.parametrize("n", [0, 1, 7, 190])
def test_arrow_table_is_from_pandas(n):
    rng = np.random.default_rng(n)
    io._SCHEMAS.clear()
    for k in range(3):  # first call: pyarrow's own conversion; later calls: the cached schema
        df = _frame(rng, n, nan_share=0.1 * k)
        _same_table(io.arrow_table(df), pa.Table.from_pandas(df, preserve_index=False))
    assert io._SCHEMAS, "the schema of this frame shape is cached"


def test_arrow_table_other_frames_fall_back():
    rng = np.random.default_rng(1)
    frames = [
        pd.DataFrame({"a": ["x", "y", None], "b": [1.0, np.nan, 2.0]}, dtype=object),  # object columns
        pd.DataFrame(np.ones((3, 2)), columns=[1, 2]),                                    # non-string names
        pd.DataFrame({"t": pd.to_datetime(["2020-01-01", "2021-01-01"]), "v": [1.0, 2.0]}),
        pd.DataFrame({"c": pd.Categorical(["a", "b", "a"]), "v": [1.0, 2.0, 3.0]}),
        _frame(rng, 20).set_index("ObjectNumber"),                                        # an index to drop
        pd.DataFrame(index=range(4)),                                                     # rows, no column
    ]
    for df in frames:
        for _ in range(2):
            _same_table(io.arrow_table(df), pa.Table.from_pandas(df, preserve_index=False))


def test_write_parquet_same_file_as_pandas(tmp_path):
    rng = np.random.default_rng(2)
    for k in range(2):
        df = _frame(rng, 150)
        df.to_parquet(tmp_path / "pandas.parquet", index=False)
        io.write_parquet(df, tmp_path / "ours.parquet")
        assert (tmp_path / "pandas.parquet").read_bytes() == (tmp_path / "ours.parquet").read_bytes()
        # the partition options: another file, the same table when read back
        io.write_parquet(df, tmp_path / "plain.parquet", compression="none", use_dictionary=False)
        _same_table(pq.read_table(tmp_path / "plain.parquet"), pq.read_table(tmp_path / "pandas.parquet"))
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "plain.parquet"), df, check_exact=True)
    df.attrs["note"] = "kept"  # attrs: pandas' own writer stores them
    io.write_parquet(df, tmp_path / "attrs.parquet")
    assert pd.read_parquet(tmp_path / "attrs.parquet").attrs == {"note": "kept"}


def test_partition_options_read_back_equal(tmp_path):
    from profiler.partitions import PARTITION_OPTIONS

    df = _frame(np.random.default_rng(3), 190, seed_cols=300)
    io.write_parquet(df, tmp_path / "p.parquet", **PARTITION_OPTIONS)
    df.to_parquet(tmp_path / "ref.parquet", index=False)
    _same_table(pq.read_table(tmp_path / "p.parquet"), pq.read_table(tmp_path / "ref.parquet"))


# ---------------------------------------------------------------------------------------------
# the outlier model

def _same_bits(a, b) -> None:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)) if a.size else True


@pytest.mark.parametrize("rows", [10, 599, 600, 601, 1522])
def test_nanmedian_columns_is_numpy(rows):
    rng = np.random.default_rng(rows)
    a = rng.standard_t(2, size=(rows, 60)) * 10.0 ** rng.integers(-4, 5, size=60)
    a[:, ::7] = np.round(a[:, ::7])                      # ties
    a[rng.random(a.shape) < 0.02] = np.nan                # scattered NaN
    a[:, 5] = np.nan                                      # an all-NaN column
    a[:, 6] = 3.0                                         # a constant column
    a[: rows // 2, 8] = np.nan                            # half NaN
    a[:, 9] = np.where(rng.random(rows) < 0.5, np.inf, -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _same_bits(nanmedian_columns(a), np.nanmedian(a, axis=0))
        clean = a[:, ~np.isnan(a).any(axis=0)]
        _same_bits(nanmedian_columns(clean), np.nanmedian(clean, axis=0))
        dirty = a[:, np.isnan(a).any(axis=0)]
        _same_bits(nanmedian_columns(dirty), np.nanmedian(dirty, axis=0))


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 31, 600])
def test_nanpercentile_columns_is_numpy(rows):
    # centre_then_scale's IQR of the control wells (8 rows per plate in BBBC021, a few hundred pooled)
    rng = np.random.default_rng(100 + rows)
    a = rng.standard_t(2, size=(rows, 50)) * 10.0 ** rng.integers(-4, 5, size=50)
    a[:, ::6] = np.round(a[:, ::6])                      # ties
    a[rng.random(a.shape) < 0.05] = np.nan                # scattered NaN
    a[:, 5] = np.nan                                      # an all-NaN column
    a[:, 7] = -2.5                                        # a constant column
    a[:, 9] = np.where(rng.random(rows) < 0.5, np.inf, -np.inf)
    a[:, 10] = -0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for q in ([25, 75], [50], [0, 2.5, 97.5, 100]):
            _same_bits(nanpercentile_columns(a, q), np.nanpercentile(a, q, axis=0))
            clean = a[:, ~np.isnan(a).any(axis=0)]
            _same_bits(nanpercentile_columns(clean, q), np.nanpercentile(clean, q, axis=0))


def _robust_scale_reference(a):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(a, axis=0)
        scale = np.nanmedian(np.abs(a - center), axis=0) * ol._MAD_TO_SD
        sd = np.nanstd(a, axis=0)
    scale = np.where((scale > 0) & np.isfinite(scale), scale, sd)
    ok = np.isfinite(center) & np.isfinite(scale) & (scale > 1e-12 * np.maximum(1.0, np.abs(center)))
    return center, scale, ok


def test_robust_scale_is_reference():
    rng = np.random.default_rng(5)
    a = rng.lognormal(size=(900, 80))
    a[rng.random(a.shape) < 0.05] = np.nan
    a[:, 3] = np.nan
    a[:, 4] = 1.0
    for got, want in zip(ol._robust_scale(a), _robust_scale_reference(a)):
        _same_bits(got, want)


def _matrix_reference(df, features):
    out = np.full((len(df), len(features)), np.nan)
    for j, f in enumerate(features):
        if f in df.columns:
            out[:, j] = pd.to_numeric(df[f], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def test_matrix_and_arrow_matrix_are_reference():
    rng = np.random.default_rng(6)
    df = _frame(rng, 120)
    feats = [c for c in df.columns if not c.startswith("Metadata_")] + ["Cells_Missing"]
    _same_bits(ol._matrix(df, feats), _matrix_reference(df, feats))
    floats = df[[c for c in df.columns if df[c].dtype == np.float64]]
    fl = list(floats.columns)
    got = ol._matrix(floats, fl)
    _same_bits(got, _matrix_reference(floats, fl))
    assert got.flags.c_contiguous and not np.shares_memory(got, floats.to_numpy())
    table = pa.Table.from_pandas(df, preserve_index=False)
    _same_bits(ol.arrow_matrix(table, feats), _matrix_reference(df, feats))
    chunked = pa.concat_tables([table.slice(0, 50), table.slice(50)])  # several chunks per column
    _same_bits(ol.arrow_matrix(chunked, feats), _matrix_reference(df, feats))


@pytest.mark.parametrize("shape", [(1522, 12), (300, 5), (40, 3), (25, 1)])
def test_min_cov_det_is_sklearn(shape):
    from sklearn.covariance import MinCovDet

    rng = np.random.default_rng(shape[0])
    x = rng.standard_t(3, size=shape) @ rng.normal(size=(shape[1], shape[1]))
    x[: shape[0] // 20] += 8  # outliers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = MinCovDet(random_state=0).fit(x)
        got = ol._min_cov_det()(random_state=0).fit(x)
    for k in ("location_", "covariance_", "precision_", "support_", "dist_", "raw_location_",
              "raw_covariance_", "raw_support_"):
        _same_bits(getattr(got, k), getattr(ref, k))


def test_empirical_covariance_is_sklearn():
    from sklearn.covariance import empirical_covariance

    rng = np.random.default_rng(7)
    for shape in [(50, 4), (9, 1), (1, 3)]:
        x = rng.normal(size=shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for centred in (False, True):
                _same_bits(ol._empirical_covariance(x, assume_centered=centred),
                           empirical_covariance(x, assume_centered=centred))


# ---------------------------------------------------------------------------------------------
# profiles

def _profiles(rng, n_plates=2, wells=12, feats=30):
    rows = []
    for p in range(n_plates):
        for w in range(wells):
            rows.append({"Metadata_Plate": f"P{p}", "Metadata_Well": f"W{w:02d}", "Metadata_Batch": "b1",
                         "Metadata_Control": "negative" if w < 5 else "treated"})
    meta = pd.DataFrame(rows)
    x = rng.normal(size=(len(meta), feats)) * 10.0 ** rng.integers(-2, 3, size=feats)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 2] = np.nan
    f = pd.DataFrame(x, columns=[f"Cells_F_{j}" for j in range(feats)])
    f["Cells_Int"] = rng.integers(0, 5, len(meta))
    return pd.concat([meta, f], axis=1)


@pytest.mark.parametrize("method", ["standardize", "robustize", "mad_robustize"])
def test_centre_then_scale_one_block_same_values(method, monkeypatch):
    import importlib

    nz = importlib.import_module("profiler.profiles.normalize")

    prof = _profiles(np.random.default_rng(8))
    feats = [c for c in prof.columns if not c.startswith("Metadata_")]
    ref = (prof["Metadata_Control"] == "negative").to_numpy()
    got = nz.centre_then_scale(prof, feats, ref, method=method, by="Metadata_Plate", scale_by="Metadata_Batch")

    # the former ending: copy, then assign the feature columns
    real_concat = pd.concat
    captured = {}

    def spy(objs, *a, **k):
        captured["x"] = objs[1].to_numpy()
        return real_concat(objs, *a, **k)

    monkeypatch.setattr(nz.pd, "concat", spy)
    nz.centre_then_scale(prof, feats, ref, method=method, by="Metadata_Plate", scale_by="Metadata_Batch")
    want = prof.reset_index(drop=True).copy()
    want[feats] = captured["x"]
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.columns) == list(prof.columns)


def test_apply_recipe_drops_the_same_empty_features():
    from profiler.profiles import apply_recipe

    prof = _profiles(np.random.default_rng(9))
    rec = {"normalize": "mad_robustize", "feature_select": ["drop_na_columns"]}
    out = apply_recipe(prof, rec, samples="Metadata_Control == 'negative'")
    assert "Cells_F_2" not in out.columns  # NaN in every well
    assert "Cells_F_3" in out.columns


# ---------------------------------------------------------------------------------------------
# the collector

def test_gc_frozen_restores():
    from profiler.heap import gc_frozen

    assert gc.get_freeze_count() == 0
    with gc_frozen():
        assert gc.get_freeze_count() > 0
        junk = [[] for _ in range(10)]
        for a, b in zip(junk, junk[1:]):
            a.append(b)
            b.append(a)  # cycles made inside the block are still collected
        del junk, a, b
        assert gc.collect() > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze objects itself is left alone
    try:
        n = gc.get_freeze_count()
        with gc_frozen():
            pass
        assert gc.get_freeze_count() == n
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------------------------------------
# image QC

@pytest.mark.parametrize("shape", [(1024, 1280), (1080, 1080), (999, 1001), (101, 77), (64, 64)])
def test_ring_spectrum_is_fft2(shape):
    # the rows by a real FFT and its conjugate symmetry: fft2's ring values to rounding
    from profiler.qc import _ring_spectrum, _rps_rings

    rng = np.random.default_rng(shape[0])
    x = rng.random(shape) * 4095
    x[rng.random(shape) < 0.01] = 4095.0  # saturated specks
    x = x - x.mean()
    sel, _, _ = _rps_rings(*shape)
    want = np.fft.fft2(x).ravel()[sel]
    got = _ring_spectrum(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)
    # and the focus score from it: the slope of fft2's spectrum to 1e-12
    from profiler import qc

    image = (rng.random(shape) * 0.06).astype(np.float32)
    real = qc._ring_spectrum
    try:
        qc._ring_spectrum = lambda x: np.fft.fft2(x).ravel()[qc._rps_rings(*x.shape)[0]]
        slope_fft2 = qc.power_log_log_slope(image)
    finally:
        qc._ring_spectrum = real
    assert qc.power_log_log_slope(image) == pytest.approx(slope_fft2, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# a small plate read once: schemas, outlier sample and merge from the same tables

def _site_frame(well: str, site: int, n: int, seed: int, *, int_feature: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    feats = [f"Cells_Intensity_F{j:02d}_DNA" for j in range(12)]
    df = pd.DataFrame(rng.lognormal(size=(n, len(feats))), columns=feats)
    df.iloc[rng.integers(0, n, 3), 2] = np.nan
    if int_feature:
        df[feats[5]] = rng.integers(0, 50, n)
    df.insert(0, "ObjectNumber", np.arange(1, n + 1))
    df.insert(0, "Metadata_Site", site)
    df.insert(0, "Metadata_Well", well)
    df.insert(0, "Metadata_Plate", "P1")
    return df


@pytest.fixture
def partitions(tmp_path):
    from profiler.partitions import PARTITION_OPTIONS

    d = tmp_path / "sites"
    paths = []
    for i, (w, s, n, kw) in enumerate([("B02", 1, 40, {}), ("B02", 2, 35, {"int_feature": True}),
                                       ("B03", 1, 50, {}), ("B03", 2, 1, {}), ("B04", 1, 45, {})]):
        p = d / f"P1_{w}_s{s}.parquet"
        io.write_parquet(_site_frame(w, s, n, seed=i, **kw), p, **PARTITION_OPTIONS)
        paths.append(p)
    return paths


def test_small_plate_in_memory_gives_the_same_outputs(partitions, tmp_path, monkeypatch):
    import profiler.extract as ex

    tables = ex.read_small_plate(partitions)
    assert tables is not None and set(tables) == set(partitions)
    assert ex.partition_schemas(partitions, tables=tables) == ex.partition_schemas(partitions)
    feats = [f"Cells_Intensity_F{j:02d}_DNA" for j in range(12)] + ["Cells_Absent"]
    for wells in (None, {"B02"}, {"B03", "B04"}, {"Z99"}):
        a = ol.sample_partitions(partitions, feats, wells=wells, max_cells=60, seed=2)
        b = ol.sample_partitions(partitions, feats, wells=wells, max_cells=60, seed=2, tables=tables)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    pm = pd.DataFrame({"Metadata_Well": ["B02", "B03", "B04"], "Metadata_Compound": ["DMSO", "X", "Y"],
                       "Metadata_Control": ["negative", "", ""]})
    model = ol.fit_outlier_model(ol.sample_partitions(partitions, feats, wells=None), n_components=3)
    monkeypatch.setattr(ex, "ROW_GROUP_BYTES", 4000)  # several row groups
    got = {}
    for name, tb in (("disk", None), ("memory", tables)):
        out = tmp_path / name
        out.mkdir()
        tally = ol.OutlierTally()
        ex.stream_single_cell(partitions, out, pm, None, outliers=model, tally=tally,
                              schemas=ex.partition_schemas(partitions), tables=tb)
        got[name] = (pq.read_table(out / "single_cell.parquet"), tally.counts)
    _same_table(got["disk"][0], got["memory"][0])
    assert got["disk"][1] == got["memory"][1]
    monkeypatch.setattr(ex, "PLATE_IN_MEMORY_MB", 0)  # a large plate: streamed
    assert ex.read_small_plate(partitions) is None


def test_single_cell_dictionary_only_for_non_float_columns(partitions, tmp_path):
    import profiler.extract as ex

    out = tmp_path / "out"
    out.mkdir()
    ex.stream_single_cell(partitions, out, None, None)
    meta = pq.ParquetFile(out / "single_cell.parquet").metadata
    cols = {meta.row_group(0).column(j).path_in_schema: meta.row_group(0).column(j)
            for j in range(meta.num_columns)}
    assert cols["Metadata_Well"].has_dictionary_page
    assert not cols["Cells_Intensity_F00_DNA"].has_dictionary_page
    assert cols["Cells_Intensity_F00_DNA"].compression == "ZSTD"
    want = pa.concat_tables([pq.read_table(p) for p in partitions], promote_options="permissive")
    got = pq.read_table(out / "single_cell.parquet")
    assert got.select(want.column_names).cast(want.schema).equals(want)
