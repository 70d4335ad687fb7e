"""Plate discovery: find a plate folder's images and group them into sites.

A *site* (field of view) is one (plate, well, site) with one file per channel. This first version
knows the ImageXpress naming (``<plate>_<well>_s<site>_w<channel>[<GUID>].tif``); the segmentation
issue adds further layout presets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from profiler.config import AssayConfig
from profiler.errors import InputError
from profiler.names import COMPOUND, CONCENTRATION, CONTROL, WELL

IMAGEXPRESS = re.compile(
    r"^(?P<Plate>.+?)_(?P<Well>[A-Pa-p]\d{2})_s(?P<Site>\d+)_w(?P<Channel>\d+)"
    r"(?P<GUID>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?\.tiff?$"
)


@dataclass
class Site:
    plate: str
    well: str
    site: int
    files: dict[str, Path]                       # channel name -> file
    missing: list[str] = field(default_factory=list)  # channel names with no file

    @property
    def key(self) -> str:
        return f"{self.plate}_{self.well}_s{self.site}"

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class PlateScan:
    sites: list[Site]
    unmatched: list[Path]

    @property
    def complete_sites(self) -> list[Site]:
        return [s for s in self.sites if s.complete]


def normalize_well(well: str) -> str:
    """``b2`` / ``B2`` / ``B02`` → ``B02``."""
    m = re.fullmatch(r"([A-Za-z]+)0*(\d+)", well.strip())
    if not m:
        return well.strip()
    return f"{m.group(1).upper()}{int(m.group(2)):02d}"


def discover(plate_dir: str | Path, config: AssayConfig) -> PlateScan:
    """Scan ``plate_dir`` (top level only) for the pipeline's channels."""
    plate_dir = Path(plate_dir)
    if not plate_dir.is_dir():
        raise InputError("plate folder not found", path=plate_dir)
    by_file_key = {c.file.lstrip("w"): c.name for c in config.channels}
    groups: dict[tuple[str, str, int], dict[str, Path]] = {}
    unmatched: list[Path] = []
    for p in sorted(plate_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        m = IMAGEXPRESS.match(p.name)
        if not m or m.group("Channel") not in by_file_key:
            if p.suffix.lower() in (".tif", ".tiff", ".png"):
                unmatched.append(p)
            continue
        key = (m.group("Plate"), normalize_well(m.group("Well")), int(m.group("Site")))
        groups.setdefault(key, {})[by_file_key[m.group("Channel")]] = p
    sites = [
        Site(plate=k[0], well=k[1], site=k[2], files=files,
             missing=[c.name for c in config.channels if c.name not in files])
        for k, files in sorted(groups.items())
    ]
    if not sites:
        raise InputError("no images matching the plate layout were found", path=plate_dir,
                         hint="expected ImageXpress names like PLATE_B02_s1_w1.tif")
    return PlateScan(sites=sites, unmatched=unmatched)


def read_image(path: str | Path) -> np.ndarray:
    """Read one grayscale image as float32 on CellProfiler's scale (raw / dtype max)."""
    path = Path(path)
    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for broken files
        raise InputError(f"cannot read image ({type(exc).__name__}: {exc})", path=path,
                         hint="the file may be truncated or not a TIFF; re-export it") from exc
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D grayscale image, got shape {arr.shape}", path=path,
                         hint="export one channel per file")
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    raise InputError(f"unsupported pixel type {arr.dtype}", path=path,
                     hint="expected 8- or 16-bit unsigned integer grayscale images")


def read_site(site: Site) -> dict[str, np.ndarray]:
    """Read every channel of a site; all channels must have the same shape."""
    images = {ch: read_image(p) for ch, p in site.files.items()}
    shapes = {ch: im.shape for ch, im in images.items()}
    if len(set(shapes.values())) > 1:
        raise InputError(f"channels of site {site.key} have different shapes: {shapes}",
                         path=next(iter(site.files.values())).parent,
                         hint="every channel of a site must be the same size")
    return images


def read_platemap(path: str | Path) -> pd.DataFrame:
    """Read ``platemap.csv`` (well, compound, concentration, control) into Metadata_* columns."""
    path = Path(path)
    try:
        pm = pd.read_csv(path, dtype={"well": str, "compound": str, "control": str})
    except Exception as exc:
        raise InputError(f"cannot read platemap ({exc})", path=path) from exc
    need = {"well", "compound"}
    if not need <= set(pm.columns):
        raise InputError(f"platemap needs columns {sorted(need)}, has {list(pm.columns)}", path=path)
    pm["well"] = pm["well"].map(normalize_well)
    dup = pm["well"][pm["well"].duplicated()].unique()
    if len(dup):
        raise InputError(f"platemap lists wells more than once: {', '.join(dup[:10])}", path=path,
                         hint="each well must appear on one row")
    out = pd.DataFrame({WELL: pm["well"], COMPOUND: pm["compound"]})
    if "concentration" in pm:
        out[CONCENTRATION] = pd.to_numeric(pm["concentration"], errors="coerce")
    out[CONTROL] = pm["control"].fillna("").astype(str) if "control" in pm else ""
    return out
