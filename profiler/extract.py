"""``profiler extract``: plate folder → per-cell table → per-well profiles.

The unit of work is one site (:func:`process_site`); :func:`extract` discovers the sites, runs
them, annotates the cells with the platemap, builds the per-well profiles with pycytominer and
writes ``single_cell.parquet``, ``image.parquet`` (one row per site, with QC and skipped sites),
``profiles.parquet`` and ``manifest.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler import io
from profiler.config import AssayConfig, load_pipeline
from profiler.errors import InputError
from profiler.measure import DEFAULT_FAMILIES, measure_objects
from profiler.names import OBJECT_NUMBER, PLATE, SITE, WELL
from profiler.plate import Site, discover, read_platemap, read_site
from profiler.profiles import build_profiles
from profiler.segment import segment_site

log = logging.getLogger(__name__)

COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")


def measure_site(seg, images: Mapping[str, np.ndarray], features: Mapping[str, Any]) -> pd.DataFrame:
    """One row per cell: every compartment's features side by side, keyed by ObjectNumber."""
    families = features.get("families", list(DEFAULT_FAMILIES))
    params = {k: v for k, v in features.items() if k != "families"}
    n = seg.n_objects
    tables = []
    for comp, labels in (("Nuclei", seg.nuclei), ("Cells", seg.cells), ("Cytoplasm", seg.cytoplasm)):
        tables.append(measure_objects(labels, images, compartment=comp, families=families,
                                      params=params, n_objects=n))
    out = pd.concat(tables, axis=1)
    out.insert(0, OBJECT_NUMBER, np.arange(1, n + 1))
    return out


def process_site(site: Site, config: AssayConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Segment and measure one site. Returns (per-cell table, image/QC record)."""
    record: dict[str, Any] = {PLATE: site.plate, WELL: site.well, SITE: site.site,
                              "Metadata_Status": "ok", "Metadata_Reason": ""}
    images = read_site(site)
    seg = segment_site(images, nuclei_channel=config.channel_for_role("nuclei"),
                       cells_channel=config.channel_for_role("cells"),
                       params=config.section("segmentation"))
    cells = measure_site(seg, images, config.section("features"))
    cells.insert(0, SITE, site.site)
    cells.insert(0, WELL, site.well)
    cells.insert(0, PLATE, site.plate)
    record["Count_Cells"] = seg.n_objects
    return cells, record


def extract(plate_dir: str | Path, out_dir: str | Path, *, pipeline: str | Path = "example",
            platemap: str | Path | None = None) -> Path:
    """Run the whole extraction on a plate folder; returns ``out_dir``."""
    plate_dir, out_dir = Path(plate_dir), Path(out_dir)
    config = load_pipeline(pipeline)
    scan = discover(plate_dir, config)
    if platemap is None and (plate_dir / "platemap.csv").is_file():
        platemap = plate_dir / "platemap.csv"
    records: list[dict[str, Any]] = []
    tables: list[pd.DataFrame] = []
    for site in scan.sites:
        if not site.complete:
            log.warning("site %s skipped: missing channel(s) %s", site.key, ", ".join(site.missing))
            records.append({PLATE: site.plate, WELL: site.well, SITE: site.site,
                            "Metadata_Status": "incomplete",
                            "Metadata_Reason": f"missing channel(s): {', '.join(site.missing)}",
                            "Count_Cells": 0})
            continue
        cells, rec = process_site(site, config)
        tables.append(cells)
        records.append(rec)
    if not tables:
        raise InputError("no complete site could be processed", path=plate_dir)
    single_cell = pd.concat(tables, ignore_index=True)
    inputs: dict[str, Path] = {"plate_dir": plate_dir}
    if platemap is not None:
        pm = read_platemap(platemap)
        single_cell = single_cell.merge(pm, on=WELL, how="left")
        inputs["platemap"] = Path(platemap)
    meta = [c for c in single_cell.columns if c.startswith("Metadata_")]
    single_cell = single_cell[meta + [c for c in single_cell.columns if c not in meta]]
    profiles_cfg = config.section("profiles")
    profiles = build_profiles(
        single_cell,
        aggregate_operation=profiles_cfg.get("aggregate", "median"),
        normalize_method=profiles_cfg.get("normalize", "mad_robustize"),
        feature_select_operations=profiles_cfg.get("feature_select", ["variance_threshold", "drop_na_columns"]),
    )
    image_table = pd.DataFrame(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_parquet(single_cell, out_dir / "single_cell.parquet")
    io.write_parquet(image_table, out_dir / "image.parquet")
    io.write_parquet(profiles, out_dir / "profiles.parquet")
    io.write_manifest(
        out_dir, command="profiler extract", inputs=inputs,
        parameters={"pipeline": config.to_dict()},
        outputs={
            "single_cell.parquet": {"rows": len(single_cell), "columns": single_cell.shape[1]},
            "image.parquet": {"rows": len(image_table)},
            "profiles.parquet": {"rows": len(profiles), "columns": profiles.shape[1]},
        },
        extra={"sites": {"found": len(scan.sites), "processed": len(tables),
                         "skipped": [r for r in records if r["Metadata_Status"] != "ok"]},
               "unmatched_files": [str(p) for p in scan.unmatched]},
    )
    return out_dir
