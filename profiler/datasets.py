"""Readers of public data sets in the form the profile steps take (per-well profiles with our metadata names).

Not user-file ingestion (that is :mod:`profiler.ingest`: CellProfiler CSV/SQLite → per-cell table):
each function here knows one published data set's files and column names.

* :func:`read_bbbc021_wells` — BBBC021 (Caie et al. 2010; Ljosa et al. 2013): the per-well mean
  profiles with compound, concentration, MoA, batch and the negative-control marker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellfusion_core.errors import InputError
from cellfusion_core.names import PLATE, WELL

__all__ = ["BBBC021_FILES", "read_bbbc021_wells"]

#: The BBBC021 files :func:`read_bbbc021_wells` reads, by role.
BBBC021_FILES = {"wells": "ljosa2013_per_well_mean.csv.gz", "image": "BBBC021_v1_image.csv.gz",
                 "moa": "BBBC021_v1_moa.csv"}


def read_bbbc021_wells(folder: str | Path) -> pd.DataFrame:
    """The Ljosa 2013 BBBC021 per-well mean profiles with our metadata names.

    Adds Metadata_Compound/Concentration (image table), Metadata_MoA (MoA table), Metadata_Batch
    (``WeekN`` prefix of the plate) and Metadata_Control (``negative`` for DMSO).
    """
    folder = Path(folder)
    files = {k: folder / v for k, v in BBBC021_FILES.items()}
    for p in files.values():
        if not p.is_file():
            raise InputError("BBBC021 file missing", path=p)
    wells = pd.read_csv(files["wells"]).rename(columns={"Image_Metadata_Plate": PLATE, "Image_Metadata_Well": WELL})
    img = pd.read_csv(files["image"])
    meta = (img.groupby(["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI"])
            [["Image_Metadata_Compound", "Image_Metadata_Concentration"]].first().reset_index())
    meta.columns = [PLATE, WELL, "Metadata_Compound", "Metadata_Concentration"]
    moa = pd.read_csv(files["moa"]).rename(columns={"compound": "Metadata_Compound",
                                                    "concentration": "Metadata_Concentration", "moa": "Metadata_MoA"})
    meta = meta.merge(moa, how="left", on=["Metadata_Compound", "Metadata_Concentration"])
    meta["Metadata_Batch"] = meta[PLATE].str.split("_").str[0]
    meta["Metadata_Control"] = np.where(meta["Metadata_Compound"] == "DMSO", "negative", "")
    out = meta.merge(wells, on=[PLATE, WELL], how="inner")
    return out.reset_index(drop=True)
