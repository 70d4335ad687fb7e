"""Plate discovery: find a plate folder's images and group them into sites.

A *site* (field of view) is one (plate, well, site) with one file per channel. How file names map
to (plate, well, site, channel) is set by the pipeline's ``layout:`` section; the channels and
their file keys come from its ``channels:`` (``file:``) entries.

Layout presets (``layout: {preset: …}``):

``imagexpress`` (default)
    Molecular Devices / BBBC021 naming ``<plate>_<well>_s<site>_w<channel>[<GUID>].tif``, e.g.
    ``Week2_180607_B02_s1_w1648EE446-….tif``; channel key ``w1`` (or ``1``).
``phenix``
    Opera/Operetta Phenix export ``r01c01f01p01-ch1sk1fk1fl1.tiff`` (row, column, field, plane,
    channel); channel key ``ch1`` (or ``1``); the plate is the folder's name; only plane
    ``layout.plane`` (default 1) is used.
``csv``
    A metadata CSV with one row per site and, per channel, ``Image_FileName_<X>`` and
    ``Image_PathName_<X>`` columns (CellProfiler LoadData / BBBC021 ``BBBC021_v1_image.csv``),
    where ``<X>`` is the channel's ``file:`` key or its name; plate and well from
    ``Image_Metadata_Plate[_<X>]`` / ``Image_Metadata_Well[_<X>]`` (or ``Metadata_Plate`` …),
    the site from ``Image_Metadata_Site`` or the ``_s<n>_`` of the file name. ``layout.csv`` is
    the CSV path (relative to the plate folder or absolute); path names are relative to the
    plate folder. Rows none of whose files exist under the folder are left out (the CSV
    usually describes a whole screen); rows with some files missing are incomplete sites.
``regex``
    ``layout.pattern``: a regular expression with CellProfiler's Metadata named groups,
    matched against file names: ``Well`` (required), ``Channel`` (required with more than one
    channel), optional ``Plate`` (default: the folder's name), ``Site`` (default 1) or
    ``Row`` + ``Column`` instead of ``Well``.

Set ``layout.recursive: true`` to look in subfolders too (e.g. BBBC021's ``Week2/Week2_24381``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from profiler.config import AssayConfig
from profiler.errors import ConfigError, InputError
from profiler.names import BATCH, COMPOUND, CONCENTRATION, CONTROL, WELL

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
PRESETS = ("imagexpress", "phenix", "csv", "regex")

IMAGEXPRESS = re.compile(
    r"^(?P<Plate>.+?)_(?P<Well>[A-Pa-p]\d{2})_s(?P<Site>\d+)_w(?P<Channel>\d+)"
    r"(?P<GUID>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?\.tiff?$"
)
PHENIX = re.compile(
    r"^r(?P<Row>\d{2})c(?P<Column>\d{2})f(?P<Site>\d{2,})p(?P<Plane>\d{2,})-ch(?P<Channel>\d+)"
    r"sk\d+fk\d+fl\d+\.tiff?$"
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
    notes: list[str] = field(default_factory=list)   # what discovery left out and why

    @property
    def complete_sites(self) -> list[Site]:
        return [s for s in self.sites if s.complete]

    @property
    def incomplete_sites(self) -> list[Site]:
        return [s for s in self.sites if not s.complete]

    @property
    def plates(self) -> list[str]:
        return sorted({s.plate for s in self.sites})

    @property
    def wells(self) -> list[str]:
        return sorted({s.well for s in self.sites})


def normalize_well(well: str) -> str:
    """``b2`` / ``B2`` / ``B02`` → ``B02``."""
    m = re.fullmatch(r"([A-Za-z]+)0*(\d+)", str(well).strip())
    if not m:
        return str(well).strip()
    return f"{m.group(1).upper()}{int(m.group(2)):02d}"


def _row_col_well(row: str, col: str) -> str:
    r = int(row)
    if not 1 <= r <= 26 * 2:
        raise ValueError(row)
    letters = chr(ord("A") + r - 1) if r <= 26 else "A" + chr(ord("A") + r - 27)
    return f"{letters}{int(col):02d}"


def _channel_keys(config: AssayConfig) -> dict[str, str]:
    """File-name channel value → channel name; ``w1`` also answers to ``1``, ``ch2`` to ``2``."""
    keys: dict[str, str] = {}
    for c in config.channels:
        keys[c.file] = c.name
        m = re.fullmatch(r"[A-Za-z]+(\d+)", c.file)
        if m:
            keys.setdefault(m.group(1), c.name)
            keys.setdefault(str(int(m.group(1))), c.name)
    return keys


def layout_of(config: AssayConfig) -> dict[str, Any]:
    """The pipeline's ``layout:`` section, validated."""
    lay = config.section("layout", {"preset": "imagexpress", "recursive": False})
    preset = str(lay.get("preset", "imagexpress")).lower()
    if preset not in PRESETS:
        raise ConfigError(f"unknown layout preset {preset!r}", path=config.source,
                          hint=f"use one of: {', '.join(PRESETS)}")
    lay["preset"] = preset
    if preset == "regex":
        pattern = lay.get("pattern")
        if not pattern:
            raise ConfigError("layout preset `regex` needs `pattern:`", path=config.source,
                              hint="e.g. pattern: '(?P<Plate>.+)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9]+)_(?P<Channel>w[0-9])'")
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"layout.pattern is not a valid regular expression ({exc})",
                              path=config.source) from exc
        groups = set(rx.groupindex)
        if "Well" not in groups and not {"Row", "Column"} <= groups:
            raise ConfigError(f"layout.pattern {pattern!r} has no (?P<Well>…) group", path=config.source,
                              hint="name the well part of the file name (?P<Well>[A-P][0-9]{2}), as in "
                                   "CellProfiler's Metadata module (or give (?P<Row>…) and (?P<Column>…))")
        if "Channel" not in groups and len(config.channels) > 1:
            raise ConfigError(f"layout.pattern {pattern!r} has no (?P<Channel>…) group but the pipeline "
                              f"has {len(config.channels)} channels", path=config.source,
                              hint="name the channel part of the file name (?P<Channel>…); its values are "
                                   "the channels' `file:` keys")
        lay["_regex"] = rx
    return lay


def _iter_files(plate_dir: Path, recursive: bool) -> Iterable[Path]:
    it = plate_dir.rglob("*") if recursive else plate_dir.iterdir()
    for p in sorted(it):
        if p.is_file() and not p.name.startswith(".") and not any(
                part.startswith(".") for part in p.relative_to(plate_dir).parts):
            yield p


def _scan_names(plate_dir: Path, config: AssayConfig, lay: dict[str, Any]) -> PlateScan:
    keys = _channel_keys(config)
    preset = lay["preset"]
    rx = {"imagexpress": IMAGEXPRESS, "phenix": PHENIX}.get(preset) or lay["_regex"]
    plane = int(lay.get("plane", 1))
    groups: dict[tuple[str, str, int], dict[str, Path]] = {}
    unmatched: list[Path] = []
    other_planes = 0
    for p in _iter_files(plate_dir, bool(lay.get("recursive", False))):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        m = rx.search(p.name) if preset == "regex" else rx.match(p.name)
        if not m:
            unmatched.append(p)
            continue
        g = m.groupdict()
        if preset == "phenix" and int(g["Plane"]) != plane:
            other_planes += 1
            continue
        chan_val = g.get("Channel")
        if chan_val is None:
            chan = config.channels[0].name
        else:
            chan = keys.get(chan_val) or keys.get(chan_val.lstrip("0") or "0")
        if chan is None:
            unmatched.append(p)
            continue
        try:
            well = normalize_well(g["Well"]) if g.get("Well") else _row_col_well(g["Row"], g["Column"])
        except (ValueError, KeyError):
            unmatched.append(p)
            continue
        plate = g.get("Plate") or (plate_dir.name if p.parent == plate_dir else p.parent.name)
        site = int(g["Site"]) if g.get("Site") else 1
        files = groups.setdefault((plate, well, site), {})
        if chan in files:
            raise InputError(f"two files for channel {chan} of site {plate}_{well}_s{site}: "
                             f"{files[chan].name} and {p.name}", path=p.parent,
                             hint="the layout must give each (plate, well, site, channel) one file; "
                                  "add Plate/Site groups or a stricter pattern")
        files[chan] = p
    notes = [f"{other_planes} files of other planes than p{plane:02d} ignored"] if other_planes else []
    return PlateScan(sites=_sites(groups, config), unmatched=unmatched, notes=notes)


def _sites(groups: dict[tuple[str, str, int], dict[str, Path]], config: AssayConfig) -> list[Site]:
    return [Site(plate=k[0], well=k[1], site=k[2], files=files,
                 missing=[c.name for c in config.channels if c.name not in files])
            for k, files in sorted(groups.items())]


def _scan_csv(plate_dir: Path, config: AssayConfig, lay: dict[str, Any]) -> PlateScan:
    csv = lay.get("csv")
    if not csv:
        raise ConfigError("layout preset `csv` needs `csv:` (the metadata CSV path)", path=config.source,
                          hint="e.g. layout: {preset: csv, csv: BBBC021_v1_image.csv.gz}")
    csv_path = Path(csv)
    if not csv_path.is_absolute():
        csv_path = plate_dir / csv_path
    if not csv_path.is_file():
        raise InputError("metadata CSV not found", path=csv_path,
                         hint="layout.csv is relative to the plate folder, or give an absolute path")
    try:
        df = pd.read_csv(csv_path, dtype=str)
    except Exception as exc:
        raise InputError(f"cannot read metadata CSV ({exc})", path=csv_path) from exc

    def col(*names: str) -> str | None:
        return next((n for n in names if n in df.columns), None)

    chan_cols: dict[str, tuple[str, str | None]] = {}
    for c in config.channels:
        fcol = col(f"Image_FileName_{c.file}", f"Image_FileName_{c.name}", f"FileName_{c.file}",
                   f"FileName_{c.name}")
        if fcol is None:
            raise InputError(f"no file-name column for channel {c.name}", path=csv_path,
                             hint=f"expected Image_FileName_{c.name} (or Image_FileName_{c.file}) and "
                                  f"Image_PathName_{c.name}")
        pcol = col(fcol.replace("FileName", "PathName"))
        chan_cols[c.name] = (fcol, pcol)
    first = config.channels[0]
    suffixes = [f"_{c.name}" for c in config.channels] + [f"_{c.file}" for c in config.channels] + [""]
    well_col = col(*[f"{pre}Metadata_Well{s}" for s in suffixes for pre in ("Image_", "")])
    if well_col is None:
        raise InputError("metadata CSV has no well column", path=csv_path,
                         hint="expected Image_Metadata_Well (or Metadata_Well, Image_Metadata_Well_<channel>)")
    plate_col = col(*[f"{pre}Metadata_Plate{s}" for s in suffixes for pre in ("Image_", "")])
    site_col = col(*[f"{pre}Metadata_Site{s}" for s in suffixes for pre in ("Image_", "")])
    groups: dict[tuple[str, str, int], dict[str, Path]] = {}
    absent_rows = 0
    counters: dict[tuple[str, str], int] = {}
    for row in df.itertuples(index=False):
        r = dict(zip(df.columns, row))
        files = {}
        for ch, (fcol, pcol) in chan_cols.items():
            name = r.get(fcol)
            if not isinstance(name, str) or not name:
                continue
            sub = r.get(pcol) if pcol else None
            files[ch] = plate_dir / sub / name if isinstance(sub, str) and sub else plate_dir / name
        present = {ch: p for ch, p in files.items() if p.is_file()}
        if not present:
            absent_rows += 1
            continue
        well = normalize_well(r[well_col])
        plate = r[plate_col] if plate_col else plate_dir.name
        if site_col and isinstance(r.get(site_col), str):
            site = int(r[site_col])
        else:
            m = re.search(r"_s(\d+)_", str(r.get(chan_cols[first.name][0], "")))
            if m:
                site = int(m.group(1))
            else:
                counters[(plate, well)] = counters.get((plate, well), 0) + 1
                site = counters[(plate, well)]
        groups[(plate, well, site)] = present
    notes = [f"{absent_rows} CSV rows left out: none of their files is under {plate_dir}"] if absent_rows else []
    return PlateScan(sites=_sites(groups, config), unmatched=[], notes=notes)


def discover(plate_dir: str | Path, config: AssayConfig) -> PlateScan:
    """Find the sites of ``plate_dir`` with the pipeline's layout and channels."""
    plate_dir = Path(plate_dir)
    if not plate_dir.is_dir():
        raise InputError("plate folder not found", path=plate_dir)
    lay = layout_of(config)
    scan = _scan_csv(plate_dir, config, lay) if lay["preset"] == "csv" else _scan_names(plate_dir, config, lay)
    if not scan.sites:
        expected = {"imagexpress": "ImageXpress names like PLATE_B02_s1_w1.tif",
                    "phenix": "Phenix names like r01c01f01p01-ch1sk1fk1fl1.tiff",
                    "csv": "files listed in the metadata CSV",
                    "regex": f"file names matching {lay.get('pattern')!r}"}[lay["preset"]]
        chans = ", ".join(f"{c.name}={c.file}" for c in config.channels)
        raise InputError("no images matching the plate layout were found", path=plate_dir,
                         hint=f"expected {expected} with channel keys {chans}"
                              + ("; set layout.recursive: true to search subfolders"
                                 if not lay.get("recursive") else ""))
    for s in scan.incomplete_sites:
        log.warning("site %s is incomplete: missing channel(s) %s", s.key, ", ".join(s.missing))
    return scan


def plate_info(plate_dir: str | Path, config: AssayConfig) -> dict[str, Any]:
    """What discovery found, for ``profiler info``: plates, wells, sites, channels, problems."""
    scan = discover(plate_dir, config)
    return {
        "plate_dir": str(plate_dir),
        "layout": layout_of(config)["preset"],
        "channels": {c.name: c.file for c in config.channels},
        "plates": scan.plates,
        "wells": scan.wells,
        "n_sites": len(scan.sites),
        "n_complete_sites": len(scan.complete_sites),
        "sites_per_well": {w: sum(1 for s in scan.sites if s.well == w) for w in scan.wells},
        "incomplete_sites": {s.key: s.missing for s in scan.incomplete_sites},
        "unmatched_files": [str(p) for p in scan.unmatched],
        "notes": scan.notes,
    }


def read_image(path: str | Path) -> np.ndarray:
    """Read one grayscale image as float32 on CellProfiler's scale (raw / dtype max)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from skimage.io import imread

            arr = imread(path)
        else:
            arr = tifffile.imread(path)
    except Exception as exc:  # the readers raise many types for broken files
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
        detail = "; ".join(f"{site.files[ch].name} ({ch}): {h}×{w}" for ch, (h, w) in shapes.items())
        raise InputError(f"channels of site {site.key} have different shapes: {detail}",
                         path=next(iter(site.files.values())).parent,
                         hint="every channel of a site must be the same size; re-export the odd file")
    return images


def read_platemap(path: str | Path) -> pd.DataFrame:
    """Read ``platemap.csv`` (well, compound, optional concentration, control, batch) into Metadata_* columns."""
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
    if "batch" in pm:   # optional: plates imaged together (pooled control spread, NSCB)
        out[BATCH] = pm["batch"].astype(str)
    return out


def check_platemap(platemap: pd.DataFrame, image_wells: Iterable[str], path: str | Path) -> list[str]:
    """Check a platemap (from :func:`read_platemap`) against the wells that have images.

    Wells with images but no platemap row are an error: their cells would carry no treatment and
    silently drop out of every profile. Platemap wells without images only get a warning (returned
    and logged): a platemap usually describes the whole plate, and wells are often left unimaged
    or fail — as in CellProfiler, where LoadData rows without images are simply not run.
    """
    image_wells = set(image_wells)
    mapped = set(platemap[WELL])
    missing = sorted(image_wells - mapped)
    if missing:
        raise InputError(f"platemap has no row for {len(missing)} well(s) that have images: "
                         f"{', '.join(missing[:20])}{' …' if len(missing) > 20 else ''}", path=path,
                         hint="add a row (well, compound, …) for each of these wells, e.g. compound DMSO "
                              "for untreated wells")
    extra = sorted(mapped - image_wells)
    if extra:
        log.warning("%s: %d platemap well(s) have no images and are skipped: %s", path, len(extra),
                    ", ".join(extra[:20]) + (" …" if len(extra) > 20 else ""))
    return extra
