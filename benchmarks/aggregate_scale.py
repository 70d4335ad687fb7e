"""Out-of-core aggregation at scale: N synthetic cells × F features → per-well medians (DuckDB).

The per-cell data are generated streaming, row group by row group, into a temporary folder
(float32 columns holding small-integer values so Parquet's dictionary encoding keeps the files
small), then aggregated with profiler.aggregate_stream.aggregate_parquet. Prints peak RSS of the
aggregation (target < 4 GB) and cells/s.

    python benchmarks/aggregate_scale.py --cells 10000000 --features 500 [--workdir /tmp]
"""

from __future__ import annotations

import argparse
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
from profiler.aggregate_stream import aggregate_parquet  # noqa: E402


def generate(folder: Path, n_cells: int, n_features: int, *, n_wells: int = 384, rows_per_group: int = 200_000,
             rows_per_file: int = 2_000_000, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    wells = np.array([f"{chr(65 + i // 24)}{i % 24 + 1:02d}" for i in range(n_wells)])
    names = [f"Cells_Synthetic_F{j:03d}" for j in range(n_features)]
    schema = pa.schema([("Metadata_Plate", pa.string()), ("Metadata_Well", pa.string())]
                       + [(n, pa.float32()) for n in names])
    files, done, writer = [], 0, None
    while done < n_cells:
        if writer is None or done % rows_per_file == 0:
            if writer is not None:
                writer.close()
            files.append(folder / f"part-{len(files):04d}.parquet")
            writer = pq.ParquetWriter(files[-1], schema, compression="zstd", use_dictionary=True)
        n = min(rows_per_group, n_cells - done, rows_per_file - done % rows_per_file)
        w = rng.integers(0, n_wells, n)
        vals = rng.integers(0, 64, (n, n_features), dtype=np.int16).astype(np.float32) + (w % 7)[:, None]
        cols = [pa.array(np.full(n, "PLATE1")), pa.array(wells[w])] + [pa.array(vals[:, j]) for j in range(n_features)]
        writer.write_table(pa.Table.from_arrays(cols, schema=schema))
        done += n
    writer.close()
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=10_000_000)
    ap.add_argument("--features", type=int, default=500)
    ap.add_argument("--memory-mb", type=float, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where to write the temporary Parquet (default: system temp)")
    ap.add_argument("--generate-into", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_into:  # child process: generation memory does not count against aggregation
        generate(Path(args.generate_into), args.cells, args.features)
        return
    tmp = Path(tempfile.mkdtemp(prefix="agg_scale_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--cells", str(args.cells), "--features", str(args.features),
                        "--generate-into", str(tmp)], check=True)
        files = sorted(tmp.glob("*.parquet"))
        t_gen = time.perf_counter() - t0
        size_gb = sum(f.stat().st_size for f in files) / 1e9
        rss_before = peak_rss_mb()
        t0 = time.perf_counter()
        out = aggregate_parquet(tmp, memory_mb=args.memory_mb, threads=args.threads)
        dt = time.perf_counter() - t0
        assert int(out["Metadata_Object_Count"].sum()) == args.cells
        emit("aggregate_parquet per-well median peak RSS", round(peak_rss_mb(), 1), "MB", baseline="< 4000 MB target",
             cells=args.cells, features=args.features, wells=len(out), parquet_gb=round(size_gb, 2),
             rss_before_aggregation_mb=round(rss_before, 1), note="loaded shared machine")
        emit("aggregate_parquet per-well median throughput", round(args.cells / dt, 1), "cells/s",
             cells=args.cells, features=args.features, seconds=round(dt, 1), generate_seconds=round(t_gen, 1),
             note="loaded shared machine")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
