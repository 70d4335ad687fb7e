"""Scaling of ``profiler extract`` over Dask workers: cells/s with 1 and 2 workers on a generated plate.

Writes a synthetic plate (:func:`profiler.synthetic.make_example_plate`), then runs the whole
extraction (segmentation, measurement, merge, profiles) with a LocalCluster of 1 and of 2 worker
processes (and, as the baseline, in this process without Dask), each from scratch
(``resume=False``) into its own folder, and reports cells per second of wall time. Wall time
includes starting the cluster and each worker's first-call compilation (numba), as a user sees it;
``--repeats`` > 1 reports the fastest run. The outputs of all runs are checked to be identical.

On a loaded machine the 2-worker speed-up is understated: the numbers are only comparable between
runs taken on the same, quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from benchmarks._common import emit, peak_rss_mb  # noqa: E402
from cellfusion_core.layout import SINGLE_CELL  # noqa: E402
from profiler.extract import extract  # noqa: E402
from profiler.synthetic import make_example_plate  # noqa: E402


def run(plate: Path, out: Path, workers: int, repeats: int) -> tuple[float, int, Path]:
    best = float("inf")
    for r in range(repeats):
        dest = out / f"w{workers}_r{r}"
        t0 = time.perf_counter()
        extract(plate, dest, workers=workers, resume=False, progress=False)
        best = min(best, time.perf_counter() - t0)
    cells = len(pd.read_parquet(dest / SINGLE_CELL, columns=["Metadata_ObjectNumber"]))
    return best, cells, dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wells", type=int, default=12)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None, help="where the plate and outputs go (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        work = Path(d)
        plate = make_example_plate(work / "plate", n_wells=args.wells, n_sites=args.sites, size=args.size,
                                   seed=0, write_truth=False)
        n_sites = args.wells * args.sites
        results = {}
        for workers in (0, 1, 2):
            results[workers] = run(plate, work / "out", workers, args.repeats)
        ref = pd.read_parquet(results[0][2] / SINGLE_CELL)
        identical = all(ref.equals(pd.read_parquet(results[w][2] / SINGLE_CELL)) for w in (1, 2))
        base_wall, cells, _ = results[0]
        common = dict(sites=n_sites, size=args.size, cells=cells, cpus=os.cpu_count(), identical_outputs=identical)
        emit("extract_scale.serial.cells_per_s", round(cells / base_wall, 2), "cells/s",
             baseline="in-process, no Dask", wall_s=round(base_wall, 2), **common)
        for workers in (1, 2):
            wall = results[workers][0]
            emit(f"extract_scale.{workers}_worker{'s' if workers > 1 else ''}.cells_per_s",
                 round(cells / wall, 2), "cells/s", baseline=f"serial {cells / base_wall:.2f} cells/s",
                 wall_s=round(wall, 2), **common)
        emit("extract_scale.speedup_2_vs_1_workers", round(results[1][0] / results[2][0], 2), "x",
             baseline="ideal 2.0 on 2 idle cores", peak_rss_mb=round(peak_rss_mb(), 1), **common)


if __name__ == "__main__":
    main()
