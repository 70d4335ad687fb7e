"""Per-well aggregation of N synthetic cells × F features stored as per-cell Parquet.

The per-cell data are generated (in a child process, so generation memory does not count) into a
temporary folder. Default layout ``sites``: one Parquet file per site, written in plate order
(well-major, ``--sites-per-well`` sites per well, cell counts drawn at random), as ``profiler
extract`` writes its per-site partitions, so one well's cells lie in consecutive files. Layout
``shuffled``: large files whose row groups hold cells of random wells (the old generator; the
streaming median cannot stream it and falls back to DuckDB). Feature values are float32 holding
small integers (dictionary encoding keeps the files small; ``--values normal`` writes continuous
float32 values instead, ~4 bytes per value on disk).

Then, on the same files, each in its own child process (its own peak RSS), timed around the call:

* ``stream median``: profiler.profiles.aggregate_stream.aggregate_parquet(operation="median") — the exact
  group-by-group median (numba); its one-off JIT compile is timed separately (``jit_seconds``).
* ``duckdb avg``: DuckDB's plain ``avg`` of every feature grouped by plate and well (reference).
* ``pyarrow read``: every feature column of every row group decoded by pyarrow (``--threads`` reads
  at once, in the stream engine's blocks of columns) and dropped — the Parquet decode alone, the
  ceiling of the stream engine.
* ``stream mean``: aggregate_parquet(operation="mean").
* ``duckdb median``: the DuckDB ``quantile_cont`` path (aggregate_parquet(engine="duckdb")),
  unless ``--no-duckdb-median``.

Each prints one JSON line (cells/s, wall and CPU seconds, peak RSS, the load average before and
after: on a shared machine compare ``cpu_vs_duckdb_avg`` too); the stream medians are checked against
``pycytominer.aggregate`` on the first three wells, and against the DuckDB median on the first eight
wells when that ran.

    python benchmarks/aggregate_scale.py --cells 2000000 --features 500 [--layout shuffled] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, peak_rss_mb  # noqa: E402

PLATE, WELL, SITE = "Metadata_Plate", "Metadata_Well", "Metadata_Site"


def _well_names(n_wells: int) -> np.ndarray:
    return np.array([f"{chr(65 + i // 24)}{i % 24 + 1:02d}" for i in range(n_wells)])


def _values(rng: np.random.Generator, n: int, n_features: int, offset: np.ndarray, kind: str) -> np.ndarray:
    if kind == "normal":
        return (rng.standard_normal((n, n_features), dtype=np.float32) * 20 + 100 + offset[:, None]).astype(np.float32)
    return rng.integers(0, 64, (n, n_features), dtype=np.int16).astype(np.float32) + offset[:, None]


def generate_sites(folder: Path, n_cells: int, n_features: int, *, n_wells: int = 384, sites_per_well: int = 9,
                   sites_per_file: int = 1, rows_per_group: int = 0, values: str = "int",
                   seed: int = 0) -> list[Path]:
    """Sites in plate order (A01's sites, then A02's …), ``sites_per_file`` consecutive sites per file
    (1: one file per site), one row group per site, or with ``rows_per_group`` sites buffered into
    row groups of at least that many rows (as extract's single_cell.parquet)."""
    rng = np.random.default_rng(seed)
    wells = _well_names(n_wells)
    names = [f"Cells_Synthetic_F{j:03d}" for j in range(n_features)]
    schema = pa.schema([(PLATE, pa.string()), (WELL, pa.string()), (SITE, pa.int32())]
                       + [(n, pa.float32()) for n in names])
    counts = rng.multinomial(n_cells, np.full(n_wells * sites_per_well, 1 / (n_wells * sites_per_well)))
    files, writer, buffer = [], None, []
    for i, n in enumerate(counts):
        w = i // sites_per_well
        vals = _values(rng, int(n), n_features, np.full(int(n), w % 7, np.float32), values)
        cols = ([pa.array(np.full(n, "PLATE1")), pa.array(np.full(n, wells[w])),
                 pa.array(np.full(n, i % sites_per_well + 1, np.int32))]
                + [pa.array(vals[:, j]) for j in range(n_features)])
        if i % sites_per_file == 0:
            if buffer:
                writer.write_table(pa.concat_tables(buffer))
                buffer = []
            if writer is not None:
                writer.close()
            files.append(folder / f"site-{i:05d}.parquet")
            writer = pq.ParquetWriter(files[-1], schema, compression="zstd", use_dictionary=True)
        buffer.append(pa.Table.from_arrays(cols, schema=schema))
        if sum(len(t) for t in buffer) >= rows_per_group:
            writer.write_table(pa.concat_tables(buffer), row_group_size=max(rows_per_group, 1) * 2)
            buffer = []
    if buffer:
        writer.write_table(pa.concat_tables(buffer), row_group_size=max(rows_per_group, 1) * 2)
    writer.close()
    return files


def generate_shuffled(folder: Path, n_cells: int, n_features: int, *, n_wells: int = 384, values: str = "int",
                      rows_per_group: int = 200_000, rows_per_file: int = 2_000_000, seed: int = 0) -> list[Path]:
    """Large files whose row groups hold cells of random wells (no well is contiguous)."""
    rng = np.random.default_rng(seed)
    wells = _well_names(n_wells)
    names = [f"Cells_Synthetic_F{j:03d}" for j in range(n_features)]
    schema = pa.schema([(PLATE, pa.string()), (WELL, pa.string())] + [(n, pa.float32()) for n in names])
    files, done, writer = [], 0, None
    while done < n_cells:
        if writer is None or done % rows_per_file == 0:
            if writer is not None:
                writer.close()
            files.append(folder / f"part-{len(files):04d}.parquet")
            writer = pq.ParquetWriter(files[-1], schema, compression="zstd", use_dictionary=True)
        n = min(rows_per_group, n_cells - done, rows_per_file - done % rows_per_file)
        w = rng.integers(0, n_wells, n)
        vals = _values(rng, n, n_features, (w % 7).astype(np.float32), values)
        cols = [pa.array(np.full(n, "PLATE1")), pa.array(wells[w])] + [pa.array(vals[:, j]) for j in range(n_features)]
        writer.write_table(pa.Table.from_arrays(cols, schema=schema))
        done += n
    writer.close()
    return files


def duckdb_avg(folder: Path, threads: int) -> int:
    """DuckDB's plain avg of every feature per plate and well (the reference speed)."""
    import duckdb

    files = sorted(folder.glob("*.parquet"))
    names = pq.read_schema(files[0]).names
    feats = [n for n in names if not n.startswith("Metadata_")]
    src = "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    sel = ", ".join(f'avg("{f}") AS "{f}"' for f in feats)
    out = con.execute(f"SELECT {PLATE}, {WELL}, count(*) AS n, {sel} FROM {src} GROUP BY {PLATE}, {WELL} "
                      f"ORDER BY {PLATE}, {WELL}").df()
    con.close()
    return int(out["n"].sum())


def pyarrow_read(folder: Path, threads: int) -> int:
    """Decode what the stream engine decodes and drop it: the Parquet decode alone, its ceiling. As
    the engine reads: first the metadata columns of every row group (its scan), then every feature
    column of every row group in blocks of columns of at most ``aggregate_stream._BLOCK_BYTES`` of
    values, ``threads`` reads at once, freed memory kept for reuse (import the two modules before
    timing it)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from profiler.heap import reused_heap
    from profiler.profiles.aggregate_stream import _BLOCK_BYTES

    files = sorted(folder.glob("*.parquet"))
    names = pq.read_schema(files[0]).names
    feats = [n for n in names if not n.startswith("Metadata_")]
    jobs = []
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            pf.read_row_group(g, columns=[n for n in names if n.startswith("Metadata_")], use_threads=False)
        meta = pf.metadata
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            width = max(1, _BLOCK_BYTES // max(rows * 4, 1))
            jobs += [(f, g, feats[c:c + width]) for c in range(0, len(feats), width)]

    local = threading.local()

    def read(job) -> int:
        if getattr(local, "path", None) != job[0]:  # each thread opens a file once, as the engine does
            local.path, local.file = job[0], pq.ParquetFile(job[0])
        return local.file.read_row_group(job[1], columns=job[2], use_threads=False).num_rows

    with reused_heap(), ThreadPoolExecutor(threads) as pool:
        return sum(n for (_, _, cols), n in zip(jobs, pool.map(read, jobs)) if cols[0] == feats[0])


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(method: str, folder: Path, threads: int, memory_mb: float) -> None:
    """Run one method, print one JSON result on stdout (wall and CPU seconds of the call)."""
    rec: dict = {}
    if method in ("duckdb avg", "pyarrow read"):
        # their imports are not timed (the stream methods import theirs before timing too)
        if method == "pyarrow read":
            import profiler.heap  # noqa: F401
            import profiler.profiles.aggregate_stream  # noqa: F401
        else:
            import duckdb  # noqa: F401
        t0, c0 = time.perf_counter(), _cpu_seconds()
        n = duckdb_avg(folder, threads) if method == "duckdb avg" else pyarrow_read(folder, threads)
        rec["seconds"], rec["cpu_seconds"] = time.perf_counter() - t0, _cpu_seconds() - c0
    else:
        from profiler.profiles import aggregate_stream as ags

        t0 = time.perf_counter()
        ags.warm_up()  # the one-off numba compile (cached on disk after the first run)
        rec["jit_seconds"] = time.perf_counter() - t0
        op, engine = {"stream median": ("median", "auto"), "stream mean": ("mean", "auto"),
                      "duckdb median": ("median", "duckdb")}[method]
        t0, c0 = time.perf_counter(), _cpu_seconds()
        out = ags.aggregate_parquet(folder, operation=op, engine=engine, threads=threads, memory_mb=memory_mb)
        rec["seconds"], rec["cpu_seconds"] = time.perf_counter() - t0, _cpu_seconds() - c0
        rec["engine_used"] = out.attrs.get("engine", engine)
        n = int(out["Metadata_Object_Count"].sum())
        if method.endswith("median"):
            out.iloc[:8].to_parquet(folder.parent / f"{folder.name}-{method.replace(' ', '_')}.parquet")
    rec["cells"] = n
    rec["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(rec), flush=True)


def pycytominer_check(folder: Path, ours: Path, n_wells: int = 3) -> dict:
    """pycytominer.aggregate (median) of the first wells' cells (read whole with pandas) vs the stream
    median's rows for those wells: equal (float32 middles: pandas may average them in float32)."""
    import pandas as pd
    import pycytominer

    got = pq.read_table(ours).to_pandas().iloc[:n_wells]
    files = sorted(folder.glob("*.parquet"))
    wells = list(got[WELL])
    cells = pd.concat([pq.read_table(f, filters=[(WELL, "in", wells)]).to_pandas() for f in files])
    feats = [c for c in cells if not c.startswith("Metadata_")]
    ref = pycytominer.aggregate(cells, strata=[PLATE, WELL], features=feats, operation="median")
    ref = ref.sort_values([PLATE, WELL]).reset_index(drop=True)
    a, b = got[feats].to_numpy(np.float64), ref[feats].to_numpy(np.float64)
    rel = float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) if a.size else 0.0
    return dict(wells_checked=wells, cells_checked=len(cells), exactly_equal=bool(np.array_equal(a, b, equal_nan=True)),
                max_rel_diff=rel, equal=bool(np.allclose(a, b, rtol=1e-6, atol=0, equal_nan=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=500)
    ap.add_argument("--wells", type=int, default=384)
    ap.add_argument("--sites-per-well", type=int, default=9)
    ap.add_argument("--layout", choices=["merged", "sites", "shuffled"], default="merged",
                    help="merged: one file, sites in plate order, row groups of --rows-per-group rows (as "
                         "extract's single_cell.parquet); sites: --sites-per-file consecutive sites per file, "
                         "a row group per site (extract's OUT/sites partitions: 1); shuffled: random wells")
    ap.add_argument("--sites-per-file", type=int, default=1)
    ap.add_argument("--rows-per-group", type=int, default=50_000)
    ap.add_argument("--values", choices=["int", "normal"], default="int")
    ap.add_argument("--memory-mb", type=float, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-duckdb-median", action="store_true", help="skip the slow DuckDB quantile_cont median")
    ap.add_argument("--workdir", default=None, help="where to write the temporary Parquet (default: system temp)")
    ap.add_argument("--note", default="shared machine (other agents running)")
    ap.add_argument("--generate-into", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_into:
        folder = Path(args.generate_into)
        if args.layout in ("sites", "merged"):
            merged = args.layout == "merged"
            generate_sites(folder, args.cells, args.features, n_wells=args.wells,
                           sites_per_well=args.sites_per_well,
                           sites_per_file=args.wells * args.sites_per_well if merged else args.sites_per_file,
                           rows_per_group=args.rows_per_group if merged else 0, values=args.values)
        else:
            generate_shuffled(folder, args.cells, args.features, n_wells=args.wells, values=args.values)
        return
    if args.child:
        child(args.child, Path(args.workdir), args.threads, args.memory_mb)
        return
    top = Path(tempfile.mkdtemp(prefix="agg_scale_", dir=args.workdir))
    tmp = top / "cells"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--cells", str(args.cells), "--features", str(args.features),
                        "--wells", str(args.wells), "--sites-per-well", str(args.sites_per_well),
                        "--sites-per-file", str(args.sites_per_file), "--rows-per-group", str(args.rows_per_group),
                        "--layout", args.layout, "--values", args.values, "--generate-into", str(tmp)], check=True)
        t_gen = time.perf_counter() - t0
        files = sorted(tmp.glob("*.parquet"))
        size_gb = sum(f.stat().st_size for f in files) / 1e9
        common = dict(cells=args.cells, features=args.features, wells=args.wells, layout=args.layout,
                      sites_per_well=args.sites_per_well,
                      sites_per_file=args.sites_per_file if args.layout == "sites" else None,
                      rows_per_group=args.rows_per_group if args.layout == "merged" else None,
                      values=args.values, files=len(files), parquet_gb=round(size_gb, 3), threads=args.threads,
                      generate_seconds=round(t_gen, 1), note=args.note)
        methods = (["stream median", "duckdb avg", "pyarrow read", "stream mean"]
                   + ([] if args.no_duckdb_median else ["duckdb median"]))
        load_before = os.getloadavg()[0]
        res = {}
        for m in methods:
            out = subprocess.run([sys.executable, __file__, "--child", m, "--workdir", str(tmp),
                                  "--threads", str(args.threads), "--memory-mb", str(args.memory_mb)],
                                 check=True, capture_output=True, text=True)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"# {m}: {rec}", file=sys.stderr, flush=True)
            assert rec["cells"] == args.cells, (m, rec)
            res[m] = rec
        common["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # before, after
        ref, ref_cpu = res["duckdb avg"]["seconds"], res["duckdb avg"]["cpu_seconds"]
        for m in methods:
            rec = res[m]
            extra = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in rec.items() if k != "cells"}
            what = ("aggregate pyarrow read throughput (decode only: the ceiling)" if m == "pyarrow read"
                    else f"aggregate {m} throughput")
            emit(what, round(args.cells / rec["seconds"], 1), "cells/s",
                 baseline=f"duckdb avg {round(args.cells / ref, 1)} cells/s (same run, same files)",
                 target=">= 400000 cells/s" if m == "stream median" else None,
                 vs_duckdb_avg=round(ref / rec["seconds"], 3),
                 cpu_vs_duckdb_avg=round(ref_cpu / rec["cpu_seconds"], 3), **extra, **common)
        check = pycytominer_check(tmp, tmp.parent / f"{tmp.name}-stream_median.parquet")
        emit("aggregate stream median equals pycytominer.aggregate (first 3 wells)", check["equal"], "bool",
             **check, **common)
        if "duckdb median" in res:
            a = pq.read_table(tmp.parent / f"{tmp.name}-stream_median.parquet").to_pandas()
            b = pq.read_table(tmp.parent / f"{tmp.name}-duckdb_median.parquet").to_pandas()
            feats = [c for c in a if not c.startswith("Metadata_")]
            same = bool(np.array_equal(a[feats].to_numpy(float), b[feats].to_numpy(float), equal_nan=True))
            emit("aggregate stream median equals duckdb quantile_cont (first 8 wells)", same, "bool", **common)
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
