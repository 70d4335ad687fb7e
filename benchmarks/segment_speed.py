"""Speed of segmenting one 1024×1280 BBBC021 site (nuclei + Propagation cells + cytoplasm) on one core.

Reports the median CPU time (``time.process_time``, one thread: unaffected by other load on the
machine) and the median wall time over ``--repeats`` runs after one warm-up (numba compilation).
Target: < 1 s per site.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._common import emit, peak_rss_mb, require_shared  # noqa: E402
from profiler.config import load_pipeline  # noqa: E402
from profiler.plate import discover, read_site  # noqa: E402
from profiler.segment import segment_site  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    field = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    cfg = load_pipeline("bbbc021")
    images = read_site(discover(field, cfg).complete_sites[0])
    params = cfg.section("segmentation")
    seg = segment_site(images, nuclei_channel="DAPI", cells_channel="Actin", params=params)  # warm-up / JIT
    cpu, wall = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        seg = segment_site(images, nuclei_channel="DAPI", cells_channel="Actin", params=params)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    shape = images["DAPI"].shape
    emit("segment_speed.bbbc021_site.cpu", round(float(np.median(cpu)), 3), "s CPU per site",
         baseline="< 1 s; CellProfiler 5 segmentation ≈ 3.8 s", shape=list(shape), objects=seg.n_objects,
         repeats=args.repeats)
    emit("segment_speed.bbbc021_site.wall", round(float(np.median(wall)), 3), "s wall per site",
         baseline="< 1 s (wall is inflated on a loaded machine)", shape=list(shape), peak_rss_mb=round(peak_rss_mb(), 1))


if __name__ == "__main__":
    main()
