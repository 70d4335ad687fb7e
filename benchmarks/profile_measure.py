"""CPU time of each measurement family per compartment on the real BBBC021 site (one core).

Segments site s1 of Week2_24381 (DAPI nuclei, Actin cells, cytoplasm), warms numba up once, then
runs every selected family on every compartment ``--repeats`` times and prints one JSON line per
(family, compartment) with the median ``time.process_time`` in ms, plus totals (all families, and
the families owned by the shape/intensity work: AreaShape, Intensity, RadialDistribution,
Neighbors, Location) and the peak RSS.
"""

from __future__ import annotations

import argparse
import inspect
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
from profiler.measure import DEFAULT_FAMILIES, ImageCache, get_family, measure_objects  # noqa: E402
from profiler.measure._util import LabelContext  # noqa: E402
from profiler.plate import discover, read_site  # noqa: E402
from profiler.segment import segment_site  # noqa: E402

OWNED = ("AreaShape", "Intensity", "RadialDistribution", "Neighbors", "Location")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="*", default=list(OWNED),
                    help=f"families to time (default: {' '.join(OWNED)}); 'all' = {' '.join(DEFAULT_FAMILIES)}")
    ap.add_argument("--together", action="store_true",
                    help="also time measure_objects with all selected families at once per compartment")
    args = ap.parse_args()
    fams = list(DEFAULT_FAMILIES) if args.families == ["all"] else args.families
    field = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    cfg = load_pipeline("bbbc021")
    images = read_site(discover(field, cfg).complete_sites[0])
    images = {k: np.asarray(v, dtype=np.float32) for k, v in images.items()}
    seg = segment_site(images, nuclei_channel="DAPI", cells_channel="Actin", params=cfg.section("segmentation"))
    comps = {"Nuclei": seg.nuclei, "Cells": seg.cells, "Cytoplasm": seg.cytoplasm}
    n = int(seg.n_objects)
    # warm-up (numba compile / cache load)
    small = {k: v[:128, :128] for k, v in images.items()}
    for fam in fams:
        f = get_family(fam)
        f.fn(np.ascontiguousarray(seg.cells[:128, :128]), small, n_objects=n, **f.defaults)
    total = 0.0
    owned = 0.0
    # one image cache for the whole run: after the first call, the whole-image intermediates
    # (Granularity's spectrum, Correlation's levels and Costes thresholds) are reused and the
    # medians time the per-object work; the label intermediates are rebuilt for every call
    cache = ImageCache()
    for comp, labels in comps.items():
        for fam in fams:
            f = get_family(fam)
            times = []
            for _ in range(args.repeats):
                kw = dict(f.defaults)
                if "context" in inspect.signature(f.fn).parameters:
                    kw["context"] = LabelContext(labels, n, cache)
                c0 = time.process_time()
                f.fn(labels, images, n_objects=n, **kw)
                times.append(time.process_time() - c0)
            ms = 1000 * float(np.median(times))
            total += ms
            owned += ms if fam in OWNED else 0.0
            emit(f"profile_measure.{fam}.{comp}", round(ms, 1), "ms CPU", objects=n, channels=len(images),
                 repeats=args.repeats)
    emit("profile_measure.total", round(total, 1), "ms CPU per site", families=fams,
         baseline="whole engine ≲ 1200 ms per site (25× cp-measure)")
    emit("profile_measure.total_owned", round(owned, 1), "ms CPU per site",
         families=[f for f in fams if f in OWNED])
    if args.together:
        times = []
        for _ in range(args.repeats):
            c0 = time.process_time()
            for comp, labels in comps.items():
                measure_objects(labels, images, compartment=comp, families=fams, n_objects=n, image_cache=cache)
            times.append(time.process_time() - c0)
        emit("profile_measure.measure_objects_all_compartments", round(1000 * float(np.median(times)), 1),
             "ms CPU per site", families=fams)
    emit("profile_measure.peak_rss", round(peak_rss_mb(), 1), "MB")


if __name__ == "__main__":
    main()
