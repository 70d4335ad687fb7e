"""Speed of segmenting one 1024×1280 BBBC021 site (nuclei + Propagation cells + cytoplasm) on one core.

Reports the median CPU time (``time.process_time``, one thread) and the median wall time over
``--repeats`` runs after one warm-up (numba compilation). CPU time is inflated when the machine is
loaded: compare two implementations only in the same process — ``--compare DIR`` times the
``profiler/segment.py`` of another checkout (e.g. a git worktree of an older commit), loaded under
another module name, alternating with this one on the same inputs, and checks that both give the same
label images and thresholds. ``--illumination`` segments the illumination-corrected images, as
``profiler extract`` does with the shipped ``bbbc021`` pipeline (default: the raw images, as before).
Target: < 1 s per site.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def _other_segment_site(checkout: Path):
    """``segment_site`` of ``checkout/profiler/segment.py``, imported as module ``segment_compare``."""
    path = checkout / "profiler" / "segment.py"
    spec = importlib.util.spec_from_file_location("segment_compare", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["segment_compare"] = mod
    spec.loader.exec_module(mod)
    return mod.segment_site


def _same(a, b) -> bool:
    return (all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("nuclei", "cells", "cytoplasm"))
            and all(np.float64(a.thresholds[k]).tobytes() == np.float64(b.thresholds[k]).tobytes()
                    for k in a.thresholds) and a.thresholds.keys() == b.thresholds.keys())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--illumination", action="store_true",
                    help="segment the illumination-corrected images (as extract does)")
    ap.add_argument("--compare", type=Path, default=None, metavar="DIR",
                    help="also time DIR/profiler/segment.py, alternating, in this process")
    args = ap.parse_args()
    field = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    cfg = load_pipeline("bbbc021")
    sites = discover(field, cfg).complete_sites
    images = read_site(sites[0])
    if args.illumination:
        from profiler.illum import apply_illumination, config_params, plate_illumination
        functions = plate_illumination(sites, cfg.channel_names, config_params(cfg.section("illumination")))
        images = {ch: apply_illumination(im, functions[(sites[0].plate, ch)]) for ch, im in images.items()}
    params = cfg.section("segmentation")
    impls = {"this": segment_site}
    if args.compare is not None:
        impls["compare"] = _other_segment_site(args.compare.resolve())
    segs = {k: f(images, nuclei_channel="DAPI", cells_channel="Actin", params=params)  # warm-up / JIT
            for k, f in impls.items()}
    cpu = {k: [] for k in impls}
    wall = {k: [] for k in impls}
    for _ in range(args.repeats):
        for k, f in impls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            segs[k] = f(images, nuclei_channel="DAPI", cells_channel="Actin", params=params)
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - t0)
    seg = segs["this"]
    shape = images["DAPI"].shape
    load = os.getloadavg()[0]
    emit("segment_speed.bbbc021_site.cpu", round(float(np.median(cpu["this"])), 3), "s CPU per site",
         baseline="< 1 s; CellProfiler 5 segmentation ≈ 3.8 s", shape=list(shape), objects=seg.n_objects,
         repeats=args.repeats, illumination=args.illumination, load_average_1min=round(load, 2))
    emit("segment_speed.bbbc021_site.wall", round(float(np.median(wall["this"])), 3), "s wall per site",
         baseline="< 1 s (wall is inflated on a loaded machine)", shape=list(shape), peak_rss_mb=round(peak_rss_mb(), 1))
    if args.compare is not None:
        emit("segment_speed.bbbc021_site.cpu_compare", round(float(np.median(cpu["compare"])), 3),
             "s CPU per site", baseline=None, checkout=str(args.compare), same_process_alternating=True,
             this_over_compare=round(float(np.median(cpu["this"]) / np.median(cpu["compare"])), 3),
             identical_labels_and_thresholds=_same(seg, segs["compare"]), repeats=args.repeats,
             illumination=args.illumination, load_average_1min=round(load, 2))


if __name__ == "__main__":
    main()
