"""One site's work: channel images in, one row per cell out — the unit of ``profiler extract``.

:func:`compute_site` is a pure function of the (illumination-corrected) channel images and the
pipeline: segment (:mod:`profiler.segment`), measure every configured family in every compartment
(:mod:`profiler.measure`), and optionally cut the cells' crops (:mod:`profiler.crops`).
:func:`process_site` adds the edges: it reads the site's files, measures image QC on the raw
images, applies the plate's illumination functions and writes an outline overlay when asked.
Nothing here knows about partitions, resuming or the plate (see :mod:`profiler.partitions` and
:mod:`profiler.extract`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler.config import AssayConfig
from profiler.crops import site_crops
from profiler.illum import apply_illumination
from profiler.measure import DEFAULT_FAMILIES, ImageCache, measure_objects
from cellfusion_core.names import OBJECT_NUMBER, PLATE, SITE, WELL
from profiler.overlays import overlay_rgb, write_overlay
from profiler.plate import Site, read_site
from profiler.qc import image_quality
from profiler.segment import segment_site

COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")


def measure_site(seg, images: Mapping[str, np.ndarray], features: Mapping[str, Any]) -> pd.DataFrame:
    """One row per cell: every compartment's features side by side, keyed by ObjectNumber."""
    families = features.get("families", list(DEFAULT_FAMILIES))
    params = {k: v for k, v in features.items() if k != "families"}
    n = seg.n_objects
    # whole-image intermediates (Granularity's spectrum, Correlation's levels and Costes thresholds)
    # are computed once for the site's images and shared by the three compartments
    cache = ImageCache()
    tables = []
    for comp, labels in (("Nuclei", seg.nuclei), ("Cells", seg.cells), ("Cytoplasm", seg.cytoplasm)):
        tables.append(measure_objects(labels, images, compartment=comp, families=families,
                                      params=params, n_objects=n, image_cache=cache))
    out = pd.concat(tables, axis=1)
    out.insert(0, OBJECT_NUMBER, np.arange(1, n + 1))
    return out


def compute_site(images: Mapping[str, np.ndarray], config: AssayConfig, *, crop_size: int | None = None,
                 crop_mask: bool = False) -> tuple[pd.DataFrame, dict[str, Any], Any, np.ndarray | None]:
    """Segment and measure one site's channel images (already illumination-corrected).

    Returns ``(cells, facts, segmentation, crops)``: the per-cell table (ObjectNumber, every
    feature, CellProfiler's parent/child columns; no plate/well/site keys), the image-level facts
    (object counts, final thresholds), the :class:`profiler.segment` result and, with
    ``crop_size``, uint16 crops (n_cells, crop_size, crop_size, channels), row i ↔ cell row i.
    """
    nuc_ch, cell_ch = config.channel_for_role("nuclei"), config.channel_for_role("cells")
    seg = segment_site(images, nuclei_channel=nuc_ch, cells_channel=cell_ch,
                       params=config.section("segmentation"))
    cells = measure_site(seg, images, config.section("features"))
    for col, values in seg.relationships().items():  # CellProfiler's parent/child columns
        cells[col] = values
    facts: dict[str, Any] = {"Count_Nuclei": seg.n_objects, "Count_Cells": seg.n_objects}
    for comp, t in seg.thresholds.items():
        facts[f"Threshold_FinalThreshold_{comp}"] = t
    crops = None
    if crop_size:
        crops = site_crops(seg.cells, images, config.channel_names, seg.n_objects, int(crop_size), crop_mask)
    return cells, facts, seg, crops


def process_site(site: Site, config: AssayConfig, *,
                 illumination: Mapping[tuple[str, str], np.ndarray] | None = None,
                 overlays_dir: str | Path | None = None, crop_size: int | None = None,
                 crop_mask: bool = False) -> tuple:
    """Read, segment and measure one site. Returns (per-cell table, image/QC record), and with
    ``crop_size`` also the cells' crops: uint16 (n_cells, crop_size, crop_size, channels), row i
    ↔ table row i, cut from the illumination-corrected images (:func:`profiler.crops.site_crops`).

    ``illumination`` maps (plate, channel) → illumination function (:mod:`profiler.illum`); a
    channel with a function is divided by it before segmentation and measurement. QC
    (:func:`profiler.qc.image_quality`) is measured on the uncorrected images. With
    ``overlays_dir`` an outline PNG is written there as ``<site>.png``.
    """
    record: dict[str, Any] = {PLATE: site.plate, WELL: site.well, SITE: site.site,
                              "Metadata_Status": "ok", "Metadata_Reason": ""}
    images = read_site(site)
    record.update(image_quality(images))
    if illumination:
        images = {ch: apply_illumination(im, illumination[(site.plate, ch)])
                  if (site.plate, ch) in illumination else im for ch, im in images.items()}
    cells, facts, seg, crops = compute_site(images, config, crop_size=crop_size, crop_mask=crop_mask)
    cells.insert(0, SITE, site.site)
    cells.insert(0, WELL, site.well)
    cells.insert(0, PLATE, site.plate)
    record.update(facts)
    if overlays_dir is not None:
        nuc_ch, cell_ch = config.channel_for_role("nuclei"), config.channel_for_role("cells")
        write_overlay(overlay_rgb(images[nuc_ch], images[cell_ch], seg.nuclei, seg.cells),
                      Path(overlays_dir) / f"{site.key}.png")
    if crops is not None:
        return cells, record, crops
    return cells, record
