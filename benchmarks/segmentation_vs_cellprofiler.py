"""Our segmentation vs CellProfiler 5 running profiler/pipelines/cellprofiler/bbbc021.cppipe.

On the real BBBC021 field (site s1 of ../shared/data/bbbc021/fields/Week2/Week2_24381) and on
CellProfiler's ExampleHuman images (renamed into the same ImageXpress layout, nuclei diameter
range changed to 6–40 px in both engines). CellProfiler saves its label images without bit-depth
conversion; we segment the same raw images with the `bbbc021` pipeline's segmentation section and
match objects one-to-one by IoU.

Prints JSON lines: nucleus count difference (%), fraction of CellProfiler's nuclei matched at
IoU ≥ 0.7, fraction of its cells matched at IoU ≥ 0.6 (targets: ≤ 5 %, ≥ 0.90, ≥ 0.80).

    python benchmarks/segmentation_vs_cellprofiler.py [--dataset bbbc021|example_human|both]
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
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, SHARED_DATA, emit, require_shared  # noqa: E402
from profiler.config import load_pipeline  # noqa: E402
from profiler.plate import discover, read_site  # noqa: E402
from profiler.segment import match_objects, segment_site  # noqa: E402

CPPIPE = REPO / "profiler" / "pipelines" / "cellprofiler" / "bbbc021.cppipe"
DIAMETER_LINE = "Typical diameter of objects, in pixel units (Min,Max):15,80"


def cellprofiler_env() -> Path:
    tool = SHARED_DATA.parent / "tools" / "cellprofiler-reference-env.sh"
    out = subprocess.run(["bash", str(tool)], check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def prepare(dataset: str, work: Path) -> tuple[Path, Path, dict]:
    """Input folder, cppipe and our segmentation parameters for ``dataset``."""
    inp = work / "in"
    inp.mkdir(parents=True)
    params = load_pipeline("bbbc021").section("segmentation")
    text = CPPIPE.read_text()
    assert DIAMETER_LINE in text, "bbbc021.cppipe changed: update DIAMETER_LINE"
    if dataset == "bbbc021":
        field = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
        for f in sorted(field.glob("*_s1_w*.tif")):
            shutil.copy(f, inp / f.name)
    else:
        src = require_shared("cellprofiler_example_human")
        for suffix, w in (("d0", "w1"), ("d1", "w2"), ("d2", "w4")):
            shutil.copy(next(src.glob(f"*{suffix}.tif")), inp / f"EXH_D03_s1_{w}.tif")
        text = text.replace(DIAMETER_LINE, DIAMETER_LINE.replace("15,80", "6,40"))
        params["nuclei"].update(min_diameter=6, max_diameter=40)
    pipe = work / "pipeline.cppipe"
    pipe.write_text(text)
    return inp, pipe, params


def run(dataset: str) -> None:
    with tempfile.TemporaryDirectory(prefix=f"segcp_{dataset}_") as tmp:
        work = Path(tmp)
        inp, pipe, params = prepare(dataset, work)
        out = work / "out"
        out.mkdir()
        env = cellprofiler_env()
        t0 = time.perf_counter()
        proc = subprocess.run([str(env / "bin" / "cellprofiler"), "-c", "-r", "-p", str(pipe), "-i", str(inp),
                               "-o", str(out), "--enable-readers", "imageio_reader"], capture_output=True, text=True)
        cp_wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"CellProfiler failed on {dataset}")
        cp = {c: tifffile.imread(next(out.glob(f"*_{c.lower()}.tiff"))).astype(np.int64)
              for c in ("Nuclei", "Cells", "Cytoplasm")}
        cfg = load_pipeline("bbbc021")
        site = discover(inp, cfg).complete_sites[0]
        images = read_site(site)
        t0 = time.process_time()
        seg = segment_site(images, nuclei_channel="DAPI", cells_channel="Actin", params=params)
        ours_cpu = time.process_time() - t0
        n_cp, n_ours = int(len(np.unique(cp["Nuclei"])) - 1), seg.n_objects
        nuc = match_objects(cp["Nuclei"], seg.nuclei, min_iou=0.7)
        cel = match_objects(cp["Cells"], seg.cells, min_iou=0.6)
        cyt = match_objects(cp["Cytoplasm"], seg.cytoplasm, min_iou=0.6)
        extra = {"dataset": dataset, "n_cellprofiler": n_cp, "n_ours": n_ours}
        emit(f"segmentation_vs_cellprofiler.{dataset}.nucleus_count_difference",
             round(100 * abs(n_ours - n_cp) / max(n_cp, 1), 2), "%", baseline="<= 5 % (CellProfiler 5)", **extra)
        emit(f"segmentation_vs_cellprofiler.{dataset}.nuclei_matched_iou0.7", round(nuc["recall"], 4),
             "fraction of CP nuclei", baseline=">= 0.90", median_iou=float(np.median(nuc["ious"])), **extra)
        emit(f"segmentation_vs_cellprofiler.{dataset}.cells_matched_iou0.6", round(cel["recall"], 4),
             "fraction of CP cells", baseline=">= 0.80", median_iou=float(np.median(cel["ious"])), **extra)
        emit(f"segmentation_vs_cellprofiler.{dataset}.cytoplasm_matched_iou0.6", round(cyt["recall"], 4),
             "fraction of CP cytoplasms", baseline=None, **extra)
        emit(f"segmentation_vs_cellprofiler.{dataset}.seconds", round(ours_cpu, 3), "s CPU (ours, segmentation)",
             baseline=f"CellProfiler whole run {cp_wall:.1f} s wall incl. start-up", **extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["bbbc021", "example_human", "both"], default="both")
    args = ap.parse_args()
    for ds in (["bbbc021", "example_human"] if args.dataset == "both" else [args.dataset]):
        run(ds)


if __name__ == "__main__":
    main()
