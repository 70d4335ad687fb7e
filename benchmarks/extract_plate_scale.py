"""``profiler extract`` at plate scale: memory of the merge + profile stage, and Dask scaling.

Two parts (``--part merge``, ``--part dask``, default both):

(a) **merge** — fabricates the per-site outputs of a finished run in the real per-site format
    (``OUT/sites/<site>.parquet`` with Metadata keys, ObjectNumber, ``--features`` float64 feature
    columns, Location and Parent columns; ``OUT/sites/<site>.json`` records with the pipeline hash,
    input signature, row count and SHA-256) for a plate folder of empty image files, so that
    ``profiler extract`` reuses every site and runs exactly its streaming merge, aggregation and
    profile recipe. The command runs as a subprocess; its peak RSS (the whole process tree, polled
    with psutil, and the kernel's maximum resident set of the child) and cells/s are printed:
    ``"what": "plate_scale peak_rss"`` (target < 2 GB) and ``"what": "plate_scale cells_per_s"``.
(b) **dask** — a synthetic 5-channel Cell Painting-sized plate (``--size`` 1080 px, ``--wells`` ×
    ``--sites`` ≥ 48 sites; the example plate's three channels plus two derived channels) through
    the whole extraction with every feature family, with 1 and with 2 Dask workers: cells/s per
    core and the 2-vs-1 speed-up (target ≥ 1.7×). On a machine shared with other jobs the speed-up
    is understated; the JSON line says how loaded the machine was (load average).

    python benchmarks/extract_plate_scale.py --part merge --cells 1000000 --features 1500
    python benchmarks/extract_plate_scale.py --part dask --wells 24 --sites 2 --size 1080
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._common import emit  # noqa: E402
from cellfusion_core.layout import (MANIFEST, PLATEMAP_FILE, PROFILES, SINGLE_CELL, SITES_DIR,  # noqa: E402
                                    site_record_file, site_table_file)

PLATE = "SCALE01"
CHANNELS = ("w1", "w2", "w3")
PROFILER = Path(sys.executable).with_name("profiler")


def well_names(n: int) -> list[str]:
    return [f"{chr(65 + i // 24)}{i % 24 + 1:02d}" for i in range(n)]


def fabricate(work: Path, n_cells: int, n_features: int, cells_per_site: int, seed: int = 0) -> tuple[Path, Path, int]:
    """A plate folder of empty image files + an output folder whose sites are all done.

    The partitions are kept in ``work`` and reused by a later call with the same arguments; the
    records (which carry the pipeline hash of the code as it is now) are always written anew, just
    before the run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cellfusion_core import io
    from profiler.config import load_pipeline
    from profiler.partitions import _input_signature, pipeline_hash, site_stem
    from profiler.plate import discover
    from profiler.qc import image_quality

    n_sites = math.ceil(n_cells / cells_per_site)
    sites_per_well = 4
    n_wells = math.ceil(n_sites / sites_per_well)
    if n_wells > 384:
        sites_per_well = math.ceil(n_sites / 384)
        n_wells = math.ceil(n_sites / sites_per_well)
    wells = well_names(n_wells)
    plate_dir, out = work / "plate", work / "out"
    key = {"cells": n_cells, "features": n_features, "cells_per_site": cells_per_site, "seed": seed}
    marker = work / "fabricated.json"
    reuse = marker.is_file() and json.loads(marker.read_text()) == key
    if not reuse and work.exists():
        import shutil

        shutil.rmtree(work)
    plate_dir.mkdir(parents=True, exist_ok=True)
    k = 0
    for w in wells:
        for s in range(1, sites_per_well + 1):
            if k == n_sites:
                break
            for ch in CHANNELS:
                (plate_dir / f"{PLATE}_{w}_s{s}_{ch}.tif").touch()
            k += 1
    rows = ["well,compound,concentration,control"]
    for i, w in enumerate(wells):
        rows.append(f"{w},DMSO,0,negative" if i % 8 == 0 else f"{w},Cmpd{i % 5},1.0,")
    (plate_dir / PLATEMAP_FILE).write_text("\n".join(rows) + "\n")

    config = load_pipeline("example")
    scan = discover(plate_dir, config)
    sites_dir = out / SITES_DIR
    sites_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.parquet"), out / MANIFEST]:
        stale.unlink(missing_ok=True)
    comps = ("Nuclei", "Cells", "Cytoplasm")
    feats = [f"{comps[j % 3]}_Intensity_Synthetic{j:04d}_DNA" for j in range(n_features)]
    rng = np.random.default_rng(seed)
    template = image_quality({ch: rng.integers(0, 4000, (64, 64)).astype(np.uint16) for ch in ("DNA", "Tubulin", "Actin")})
    remaining = n_cells
    done = []
    for site in scan.sites:
        n = min(cells_per_site, remaining)
        remaining -= n
        well_effect = wells.index(site.well) % 7
        vals = rng.integers(0, 64, (n, n_features)).astype(np.float64) + well_effect if not reuse else None
        cols = {"Metadata_Plate": pa.array([site.plate] * n), "Metadata_Well": pa.array([site.well] * n),
                "Metadata_Site": pa.array(np.full(n, site.site, np.int64)),
                "Metadata_ObjectNumber": pa.array(np.arange(1, n + 1, dtype=np.int64))}
        for j, f in enumerate(feats if vals is not None else ()):
            cols[f] = pa.array(vals[:, j])
        cols["Nuclei_Location_Center_X"] = pa.array(rng.uniform(0, 1000, n))
        cols["Nuclei_Location_Center_Y"] = pa.array(rng.uniform(0, 1000, n))
        cols["Cells_Parent_Nuclei"] = pa.array(np.arange(1, n + 1, dtype=np.int64))
        stem = site_stem(site)
        part = sites_dir / site_table_file(stem)
        if not reuse:
            pq.write_table(pa.table(cols), part, compression="zstd")
        done.append((site, stem, part, n))
    phash = pipeline_hash(config)  # the code as it is now (records written in seconds, just before the run)
    for site, stem, part, n in done:
        record = {"Metadata_Plate": site.plate, "Metadata_Well": site.well, "Metadata_Site": site.site,
                  "Metadata_Status": "ok", "Metadata_Reason": "", **template,
                  "Count_Nuclei": n, "Count_Cells": n}
        io.write_json({"site": stem, "pipeline_hash": phash, "inputs": _input_signature(site), "status": "ok",
                       "record": record, "partition": {"file": part.name, "rows": n, "sha256": io.file_sha256(part)}},
                      sites_dir / site_record_file(stem))
    marker.write_text(json.dumps(key))
    return plate_dir, out, len(scan.sites)


def tree_rss(proc) -> int:
    try:
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except Exception:  # noqa: BLE001 - a process ended between the calls
        return 0


class CpuTally:
    """CPU seconds of a process tree, split by phase: polled, the last reading of every process kept.

    ``main``: the command's own process, split into ``main_serial`` (no Dask worker alive) and
    ``main_during`` (while worker processes run); ``workers``: every Dask worker process
    (``multiprocessing`` spawn children); ``other``: the rest (e.g. multiprocessing's resource tracker).
    With ``sites_dir`` and ``n_sites``, the CPU after the last site's record appeared is counted apart:
    ``main_after_sites`` (then not in ``main_serial``/``main_during``) and ``workers_after_sites``
    (also in ``workers``): the workers stay up for the merge, which is not work that shares the
    cores with sites."""

    def __init__(self, root, sites_dir: Path | None = None, n_sites: int = 0) -> None:
        self.root = root
        self.last: dict[int, tuple[str, float]] = {}
        self.main_serial = self.main_during = 0.0
        self._main_prev = 0.0
        self.sites_dir, self.n_sites = sites_dir, n_sites
        self.after: dict[str, float] | None = None  # the workers' CPU when the last site finished
        self.main_after = 0.0

    def _sites_done(self) -> bool:
        return self.sites_dir is not None and self.sites_dir.is_dir() and \
            sum(1 for _ in self.sites_dir.glob("*.json")) >= self.n_sites

    @staticmethod
    def _cpu(p) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def poll(self) -> None:
        try:
            kids = self.root.children(recursive=True)
            main = self._cpu(self.root)
        except Exception:  # noqa: BLE001 - the command ended between the calls
            return
        workers_alive = False
        for c in kids:
            try:
                kind = self.last[c.pid][0] if c.pid in self.last else (
                    "workers" if "spawn_main" in " ".join(c.cmdline()) else "other")
                self.last[c.pid] = (kind, self._cpu(c))
                workers_alive |= kind == "workers"
            except Exception:  # noqa: BLE001 - ended meanwhile: its last reading stays
                continue
        step, self._main_prev = main - self._main_prev, main
        if self.after is not None:
            self.main_after += step
        elif workers_alive:
            self.main_during += step
        else:
            self.main_serial += step
        if self.after is None and self.n_sites and self._sites_done():
            self.after = {"workers": self._workers()}

    def _workers(self) -> float:
        return sum(cpu for kind, cpu in self.last.values() if kind == "workers")

    def totals(self) -> dict[str, float]:
        out = {"main_serial": self.main_serial, "main_during": self.main_during, "workers": 0.0, "other": 0.0}
        for kind, cpu in self.last.values():
            out[kind] += cpu
        if self.after is not None:
            out["main_after_sites"] = self.main_after
            out["workers_after_sites"] = self._workers() - self.after["workers"]
        return {k: round(v, 1) for k, v in out.items()}


def run_measured(cmd: list[str], interval: float = 0.05, *, sites_dir: Path | None = None,
                 n_sites: int = 0) -> tuple[float, float, int, dict[str, float]]:
    """Run ``cmd``, polling every ``interval`` s; returns (wall s, peak RSS of the process tree in MB,
    return code, CPU seconds by phase — :class:`CpuTally`)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        ps = psutil.Process(proc.pid)
        cpu = CpuTally(ps, sites_dir, n_sites)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(ps))
            cpu.poll()
            time.sleep(interval)
        wall = time.perf_counter() - t0
        log.seek(0)
        err = log.read().decode(errors="replace")
    if proc.returncode:
        print(err[-3000:], file=sys.stderr)
    child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    kernel_peak_mb = child_max / 1024 if child_max > before else 0.0
    return wall, max(peak / 2**20, kernel_peak_mb), proc.returncode, cpu.totals()


def part_merge(args, work: Path) -> None:
    t0 = time.perf_counter()
    plate_dir, out, n_sites = fabricate(work, args.cells, args.features, args.cells_per_site)
    gen_s = time.perf_counter() - t0
    cmd = [str(PROFILER), "extract", str(plate_dir), "-o", str(out), "--workers", "0", "--no-progress"]
    wall, peak_mb, rc, _ = run_measured(cmd)
    manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    sites = manifest.get("sites", {})
    if rc or sites.get("reused") != n_sites:
        raise SystemExit(f"the run did not reuse every fabricated site (exit {rc}, reused {sites.get('reused')} of "
                         f"{n_sites}): the numbers would not measure the merge; is the code being edited meanwhile?")
    common = dict(cells=args.cells, features=args.features, sites=n_sites, reused=sites.get("reused"),
                  processed=sites.get("processed"), returncode=rc, fabricate_s=round(gen_s, 1), wall_s=round(wall, 1),
                  profiles_rows=manifest.get("outputs", {}).get(PROFILES, {}).get("rows"))
    emit("plate_scale peak_rss", round(peak_mb, 1), "MB", baseline="target < 2000 MB", **common)
    emit("plate_scale cells_per_s", round(args.cells / wall, 1), "cells/s",
         baseline="merge + aggregate + recipe, every site reused; whole `profiler extract` process", **common)


def five_channel_plate(work: Path, wells: int, sites: int, size: int) -> tuple[Path, Path]:
    """The example plate at ``size`` px plus two channels derived from it (w4: blurred tubulin,
    w5: actin × DNA texture), and a pipeline YAML naming all five, every family."""
    import tifffile
    from scipy import ndimage as ndi

    from profiler.synthetic import make_example_plate

    plate = make_example_plate(work / "plate5", n_wells=wells, n_sites=sites, size=size, seed=0, write_truth=False)
    for f in sorted(plate.glob("*_w2.tif")):
        tub = tifffile.imread(f).astype(np.float32)
        act = tifffile.imread(f.with_name(f.name.replace("_w2.tif", "_w3.tif"))).astype(np.float32)
        dna = tifffile.imread(f.with_name(f.name.replace("_w2.tif", "_w1.tif"))).astype(np.float32)
        er = ndi.gaussian_filter(tub, 2.0)
        mito = np.sqrt(act * (dna / max(float(dna.max()), 1.0)) * 4000.0)
        tifffile.imwrite(f.with_name(f.name.replace("_w2.tif", "_w4.tif")), np.clip(er, 0, 65535).astype(np.uint16))
        tifffile.imwrite(f.with_name(f.name.replace("_w2.tif", "_w5.tif")), np.clip(mito, 0, 65535).astype(np.uint16))
    import yaml

    from profiler.config import load_pipeline

    spec = load_pipeline("example").to_dict()
    spec["name"] = "example5"
    spec["channels"] = spec["channels"] + [{"name": "ER", "file": "w4", "role": None},
                                           {"name": "Mito", "file": "w5", "role": None}]
    spec["channels"] = [{k: v for k, v in c.items() if v is not None} for c in spec["channels"]]
    spec.setdefault("features", {}).pop("families", None)  # every registered family
    yml = work / "example5.yaml"
    yml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return plate, yml


def part_dask(args, work: Path) -> None:
    import pandas as pd

    # numba's on-disk cache is filled first (a small plate, in one process): neither measured run
    # pays for compiling kernels that changed since the last run
    warm, warm_yml = five_channel_plate(work / "warm", 5, 1, 256)
    run_measured([str(PROFILER), "extract", str(warm), "-o", str(work / "warm_out"), "--pipeline", str(warm_yml),
                  "--workers", "0", "--no-progress", "--no-resume"])
    plate, yml = five_channel_plate(work, args.wells, args.sites, args.size)
    walls, cells, cpu = {}, {}, {}
    load = {}
    for workers in (1, 2):
        out = work / f"dask{workers}"
        cmd = [str(PROFILER), "extract", str(plate), "-o", str(out), "--pipeline", str(yml),
               "--workers", str(workers), "--no-progress", "--no-resume"]
        load[workers] = os.getloadavg()[0]
        wall, _, rc, cpu[workers] = run_measured(cmd, interval=0.25,  # polling costs CPU the runs share
                                                 sites_dir=out / "sites", n_sites=args.wells * args.sites)
        if rc:
            raise SystemExit(f"extract with {workers} worker(s) failed (exit {rc})")
        walls[workers] = wall
        cells[workers] = len(pd.read_parquet(out / SINGLE_CELL, columns=["Metadata_ObjectNumber"]))
    same = all(pd.read_parquet(work / "dask1" / f).equals(pd.read_parquet(work / "dask2" / f))
               for f in (SINGLE_CELL, PROFILES))
    n_cols = len(pd.read_parquet(work / "dask1" / SINGLE_CELL).columns)
    common = dict(sites=args.wells * args.sites, size=args.size, channels=5, cells=cells[1], columns=n_cols,
                  identical_outputs=same, cpus=os.cpu_count(), load_avg_1min=load)
    for w in (1, 2):
        emit(f"plate_scale dask_{w}_worker cells_per_s_per_core", round(cells[w] / walls[w] / w, 2), "cells/s/core",
             baseline="whole extract incl. cluster start", wall_s=round(walls[w], 1), cpu_s=cpu[w], **common)
    emit("plate_scale dask_speedup_2_vs_1", round(walls[1] / walls[2], 2), "x", baseline="target >= 1.7", **common)
    # the same runs' CPU seconds, laid out on an otherwise idle machine with 2 cores. Until the last
    # site: the main process's CPU without workers is serial; with 1 worker its CPU while the sites run
    # uses the second core, with 2 workers it shares both cores with them (perfect balance, no tail).
    # After the last site (the merge, with the workers still up, and the profiles): the main process
    # and the workers run side by side on the 2 cores, so the phase takes at least the main process's
    # CPU and at least the whole phase's CPU over the cores the processes can use
    def modeled(w: int) -> float:
        c = cpu[w]
        main_after, workers_after = c.get("main_after_sites", 0.0), c.get("workers_after_sites", 0.0)
        sites = c["workers"] - workers_after
        before = c["main_serial"] + (sites if w == 1 else (sites + c["main_during"]) / 2)
        return before + max(main_after, workers_after / w, (main_after + workers_after) / 2)

    model = {w: modeled(w) for w in (1, 2)}
    emit("plate_scale dask_speedup_2_vs_1 cpu_model", round(model[1] / model[2], 2), "x",
         baseline="target >= 1.7; CPU seconds of these runs on an idle 2-core machine (until the last site: "
                  "serial main + workers / cores; after it: the slower of the main process and the phase's CPU "
                  "over the cores)", modeled_wall_s={w: round(v, 1) for w, v in model.items()}, cpu_s=cpu, **common)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("merge", "dask", "both"), default="both")
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=1500)
    ap.add_argument("--cells-per-site", type=int, default=1000)
    ap.add_argument("--wells", type=int, default=24)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--size", type=int, default=1080)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the fabricated data go and stay for reruns (default: a temp dir, removed)")
    args = ap.parse_args()
    if args.workdir is not None and args.part in ("merge", "both"):  # keep the fabricated partitions for reruns
        part_merge(args, args.workdir / "plate_scale_merge")
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        if args.part in ("merge", "both") and args.workdir is None:
            part_merge(args, Path(d) / "merge")
        if args.part in ("dask", "both"):
            part_dask(args, Path(d) / "dask")


if __name__ == "__main__":
    main()
