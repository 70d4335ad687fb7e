"""Speed of the measurement engine on one real BBBC021 site, side by side with cp-measure and CellProfiler 5.

Same input for all three: the BBBC021 field Week2_24381 site s1 (1024×1280, DAPI/Tubulin/Actin) and
CellProfiler's own Nuclei/Cells/Cytoplasm label images (from the cached run of
``benchmarks/parity_vs_cellprofiler.py``; CellProfiler is run if the cache is missing).

* ours: every registered family, 3 compartments × 3 channels, one ``measure_objects`` call per
  compartment as ``profiler extract`` makes it, one core (OMP/MKL/OpenBLAS/NUMBA threads = 1),
  per-image caches cleared before every timed site, after one warm-up site (numba's compiled
  kernels are loaded from its on-disk cache once per process; that one-time cost is printed
  separately);
* cp-measure 0.3: its core measurements per compartment and channel plus its colocalization
  functions per channel pair, on the same masks, in the same process;
* CellProfiler 5: the wall time of the whole ``measure_bbbc021.cppipe`` run (start-up and
  segmentation included) and the CPU time of its measurement modules (from its log).

Prints cells/s for each and the ratios (JSON lines), and the peak memory of our run for one site.
Wall times on a loaded machine are noisy: CPU times (``process_time``) are printed beside them and
the speed-up is computed from both.

usage: python benchmarks/extract_speed.py [--repeat 3] [--no-cpmeasure] [--rerun-cp]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, peak_rss_mb  # noqa: E402
from benchmarks.parity_vs_cellprofiler import (  # noqa: E402
    COMPARTMENTS, RESULTS, cpmeasure_features, load_dataset, run_cellprofiler,
)


def _clear_image_caches() -> None:
    """Forget the per-image caches so that every timed site starts cold (no reuse across sites)."""
    from profiler.measure import correlation, granularity

    granularity._CACHE.clear()
    correlation._COSTES_CACHE.clear()
    correlation._LEVELS_CACHE.clear()


def measure_site_all(images, labels, n: int) -> None:
    """Every registered family on the three compartments: one ``measure_objects`` call per
    compartment, exactly as ``profiler.extract.measure_site`` does."""
    from profiler.measure import families, measure_objects

    for comp in COMPARTMENTS:
        measure_objects(labels[comp], images, compartment=comp, families=list(families()), n_objects=n)


def family_breakdown(images, labels, n: int) -> dict[str, float]:
    """CPU seconds per family for one cold site: the families called one by one in
    ``measure_objects``' order with one shared ``LabelContext`` per compartment (as it does)."""
    import inspect

    from profiler.measure import families, get_family
    from profiler.measure._util import LabelContext

    _clear_image_caches()
    per_family: dict[str, float] = {}
    for comp in COMPARTMENTS:
        context = LabelContext(labels[comp], n)
        for name in families():
            fam = get_family(name)
            kw = dict(fam.defaults)
            if "context" in inspect.signature(fam.fn).parameters:
                kw["context"] = context
            t0 = time.process_time()
            fam.fn(labels[comp], images, n_objects=n, **kw)
            per_family[name] = per_family.get(name, 0.0) + time.process_time() - t0
    return per_family


def cellprofiler_module_cpu(log: Path) -> tuple[float, dict[str, float]]:
    """CPU seconds of CellProfiler's Measure* modules, from its log."""
    per: dict[str, float] = {}
    if not log.is_file():
        return float("nan"), per
    for m in re.finditer(r"module (\w+) # \d+: CPU_time = ([\d.]+) secs", log.read_text()):
        if m.group(1).startswith("Measure"):
            per[m.group(1)] = per.get(m.group(1), 0.0) + float(m.group(2))
    return sum(per.values()), per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of our engine (best is reported)")
    ap.add_argument("--no-cpmeasure", action="store_true")
    ap.add_argument("--rerun-cp", action="store_true", help="rerun CellProfiler to time it afresh")
    args = ap.parse_args(argv)

    cp_out, cp_wall = run_cellprofiler("bbbc021", rerun=args.rerun_cp)
    images, labels, tables = load_dataset("bbbc021", cp_out)
    n = int(max(len(tables[c]) for c in COMPARTMENTS))
    rss_before = peak_rss_mb()

    # warm-up: loads numba's cached kernels (one-time per process)
    t0 = time.perf_counter()
    _clear_image_caches()
    measure_site_all(images, labels, n)
    warm = time.perf_counter() - t0

    best_wall, best_cpu, cpus = float("inf"), float("inf"), []
    for _ in range(max(1, args.repeat)):
        _clear_image_caches()
        w0, c0 = time.perf_counter(), time.process_time()
        measure_site_all(images, labels, n)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        cpus.append(round(cpu, 3))
        if cpu < best_cpu:
            best_wall, best_cpu = wall, cpu
    peak = peak_rss_mb()
    best_fam: dict[str, float] = {}
    for _ in range(max(1, args.repeat)):
        for k, v in family_breakdown(images, labels, n).items():
            best_fam[k] = min(best_fam.get(k, float("inf")), v)
    emit("extract_speed_ours_cells_per_s", round(n / best_cpu, 1), "cells/s (CPU time, 1 core)", baseline=None,
         cells=n, seconds_cpu=round(best_cpu, 3), seconds_wall=round(best_wall, 3),
         cells_per_s_wall=round(n / best_wall, 1), first_site_s=round(warm, 2), cpu_s_each_repeat=cpus,
         per_family_cpu_s={k: round(v, 3) for k, v in best_fam.items()},
         note="one measure_objects call per compartment (as extract); per-family CPU from separate cold "
              "passes (best of the repeats), families called in turn with the shared LabelContext")
    emit("extract_peak_rss_one_site", round(peak, 1), "MB", baseline=2048, rss_before_measuring_mb=round(rss_before, 1))

    cpm_cpu = cpm_wall = float("nan")
    if not args.no_cpmeasure:
        w0, c0 = time.perf_counter(), time.process_time()
        _, secs = cpmeasure_features(images, labels, costes_scale=65535.0)
        cpm_wall, cpm_cpu = time.perf_counter() - w0, time.process_time() - c0
        emit("extract_speed_cpmeasure_cells_per_s", round(n / cpm_cpu, 2), "cells/s (CPU time, 1 core)", baseline=None,
             cells=n, seconds_cpu=round(cpm_cpu, 2), seconds_wall=round(cpm_wall, 2),
             cells_per_s_wall=round(n / cpm_wall, 2), per_function_wall_s={k: round(v, 2) for k, v in secs.items()})
        emit("extract_speedup_vs_cpmeasure", round(cpm_cpu / best_cpu, 1), "x (CPU time)", baseline=25,
             wall_ratio=round(cpm_wall / best_wall, 1))

    cp_cpu, cp_mod = cellprofiler_module_cpu(RESULTS / "bbbc021" / "cp_log.txt")
    emit("extract_speed_cellprofiler_cells_per_s", round(n / cp_wall, 2), "cells/s (wall, whole pipeline)",
         baseline=None, cells=n, seconds_wall=round(cp_wall, 1), measurement_modules_cpu_s=round(cp_cpu, 2),
         cells_per_s_measurement_cpu=round(n / cp_cpu, 2) if cp_cpu == cp_cpu else None,
         per_module_cpu_s={k: round(v, 2) for k, v in cp_mod.items()},
         note="CellProfiler wall time from the cached run (benchmarks/results/parity/bbbc021/cp_run.json)")
    emit("extract_speedup_vs_cellprofiler", round(cp_cpu / best_cpu, 1), "x (CPU of measurement modules)",
         baseline=None, wall_ratio_whole_pipeline=round(cp_wall / best_wall, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
