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
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from profiler.config import AssayConfig
from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import BATCH, COMPOUND, CONCENTRATION, CONTROL, WELL

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
PRESETS = ("imagexpress", "phenix", "csv", "regex")

IMAGEXPRESS = re.compile(
    r"^(?P<Plate>.+?)_(?P<Well>(?:[A-Pa-p]|[Aa][A-Fa-f])\d{2})_s(?P<Site>\d+)_w(?P<Channel>\d+)"
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
    image: dict[str, Any] = field(default_factory=dict)  # how to read its files (:func:`image_params`)

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
    if not isinstance(lay.get("recursive", False), bool):
        raise ConfigError(f"layout.recursive must be true or false, got {lay['recursive']!r}", path=config.source)
    plane = lay.get("plane", 1)
    if isinstance(plane, bool) or not isinstance(plane, int) or plane < 1:
        raise ConfigError(f"layout.plane must be a whole number ≥ 1, got {plane!r}", path=config.source,
                          hint="the Phenix plane (p01 = 1) whose files are read")
    for key in ("csv", "pattern"):
        if key in lay and not isinstance(lay[key], str):
            raise ConfigError(f"layout.{key} must be a string, got {lay[key]!r}", path=config.source)
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
        # a file name that is not UTF-8 (surrogate escapes) gives a printable plate name (\xNN), which
        # every table and file name can hold; the site itself is refused by its files' names
        plate = plate.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
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
    opts = image_params(config)
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
    for s in scan.sites:
        s.image = dict(opts)
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


#: defaults of the pipeline's ``image:`` section (see :func:`image_params`)
IMAGE_DEFAULTS: dict[str, Any] = {
    "plane": None,           # 1-based plane of multi-plane files (z-stacks, multi-page TIFFs); None: refuse them
    "max_megapixels": 256,   # refuse a plane larger than this before reading its pixels
}

_MAGIC = (  # first bytes → what the file really is (for files that are not TIFFs)
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"), (b"<", "a text/HTML/XML file"), (b"\x00\x00\x00\x0cjP", "a JPEG 2000 image"),
)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BAD_FILE_HINT = "the file may be truncated or not a TIFF; re-export it"


def image_params(config: AssayConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The pipeline's ``image:`` section over :data:`IMAGE_DEFAULTS`, validated.

    ``plane`` (1-based) picks one plane of every multi-plane file (a z-stack, a multi-page or
    OME-TIFF with several planes); without it such files are refused. ``max_megapixels`` bounds
    one plane's size: a larger image is refused from its TIFF header, before any pixel is read.
    """
    source = None
    if isinstance(config, AssayConfig):
        source, section = config.source, config.section("image")
    else:
        section = dict(config or {})
    p = {**IMAGE_DEFAULTS, **section}
    unknown = sorted(set(p) - set(IMAGE_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown key(s) in the image section: {', '.join(map(str, unknown))}", path=source,
                          hint=f"allowed: {', '.join(IMAGE_DEFAULTS)}")
    plane = p["plane"]
    if plane is not None and (isinstance(plane, bool) or not isinstance(plane, int) or plane < 1):
        raise ConfigError(f"image.plane must be a whole number ≥ 1 (the first plane is 1), got {plane!r}",
                          path=source, hint="e.g. image: {plane: 1}; leave it out to refuse multi-plane files")
    mp = p["max_megapixels"]
    if isinstance(mp, bool) or not isinstance(mp, (int, float)) or not mp > 0:
        raise ConfigError(f"image.max_megapixels must be a positive number, got {mp!r}", path=source,
                          hint=f"the default is {IMAGE_DEFAULTS['max_megapixels']}")
    return p


def _not_a_tiff(path: Path, head: bytes) -> InputError | None:
    if not head:
        return InputError("cannot read image: the file is empty (0 bytes)", path=path, hint=_BAD_FILE_HINT)
    if head[:4] in _TIFF_MAGIC:
        return None
    what = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    shown = head[:8].decode("latin-1").encode("unicode_escape").decode("ascii")
    return InputError(f"cannot read image: not a TIFF file ({what or 'unknown content'}; it starts with '{shown}')",
                      path=path, hint="export the image as a grayscale TIFF" +
                      (" (PNG files are read too when named .png)" if what == "a PNG image" else ""))


class _QuietTifffile(logging.Filter):
    """Mutes tifffile's own log lines about a malformed file while :func:`_tiff_plane` reads it: the
    user gets one InputError naming the file instead (or the file reads fine)."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)


_QUIET = _QuietTifffile()
logging.getLogger("tifffile").addFilter(_QUIET)


def _tiff_plane(path: Path, plane: int | None, max_megapixels: float) -> np.ndarray:
    """One 2-D plane of a TIFF, after checking its header (planes, samples, size)."""
    _QUIET.local.active = True
    try:
        return _tiff_plane_quiet(path, plane, max_megapixels)
    finally:
        _QUIET.local.active = False


def _tiff_plane_quiet(path: Path, plane: int | None, max_megapixels: float) -> np.ndarray:
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        axes, shape = series.axes, tuple(series.shape)
        if "S" in axes and shape[axes.index("S")] > 1:
            raise InputError(f"expected a 2-D grayscale image, got shape {shape} (axes {axes}: "
                             f"{shape[axes.index('S')]} samples per pixel, e.g. RGB)", path=path,
                             hint="export one channel per file, as 8- or 16-bit grayscale")
        if len(shape) < 2:
            raise InputError(f"expected a 2-D grayscale image, got shape {shape}", path=path, hint=_BAD_FILE_HINT)
        h, w = shape[-2], shape[-1]
        lead = [n for n, a in zip(shape[:-2], axes[:-2]) if a != "S"]
        n_lead = int(np.prod(lead)) if lead else 1
        # appended 2-D pages (no hyperstack metadata) show up as further series of the same shape
        same = [s for s in tf.series[1:] if tuple(s.shape) == shape and s.dtype == series.dtype] if n_lead == 1 else []
        n_planes = n_lead * (1 + len(same))
        if h * w > max_megapixels * 1e6:
            raise InputError(f"image is {w}×{h} pixels ({h * w / 1e6:,.0f} megapixels per plane, "
                             f"{h * w * series.dtype.itemsize * n_planes / 2**30:,.1f} GiB in the file); "
                             f"the limit is image.max_megapixels = {max_megapixels:g}", path=path,
                             hint="tile the image into fields, or raise image.max_megapixels in the pipeline "
                                  "if this machine has the memory (a site needs ~20 bytes per pixel and channel)")
        if n_planes > 1 and plane is None:
            desc = f"axes {axes}, shape {shape}" if n_lead > 1 else f"{n_planes} pages of {w}×{h}"
            raise InputError(f"image has {n_planes} planes ({desc}): a z-stack or multi-page file", path=path,
                             hint="choose one plane in the pipeline (image: {plane: 1}), or export one "
                                  "2-D plane per file")
        k = (plane or 1) - 1
        if k >= n_planes:
            raise InputError(f"image has {n_planes} plane(s), but the pipeline asks for image.plane = {plane}",
                             path=path, hint=f"set image.plane between 1 and {n_planes}")
        if n_lead == 1:
            arr = (series if k == 0 else same[k - 1]).asarray()
        elif len(series.pages) == n_lead and series.pages[k] is not None:
            arr = series.pages[k].asarray()  # one page per plane: read only the chosen one
        else:
            arr = series.asarray().reshape(-1, h, w)[k]
    arr = np.asarray(arr)
    return arr.reshape(h, w) if arr.size == h * w else arr


def _read_raw(path: Path, plane: int | None = None,
              max_megapixels: float = IMAGE_DEFAULTS["max_megapixels"]) -> np.ndarray:
    if path.suffix.lower() == ".png":
        try:
            from skimage.io import imread

            return np.asarray(imread(path))
        except Exception as exc:  # the readers raise many types for broken files
            raise InputError(f"cannot read image ({type(exc).__name__}: {exc})", path=path,
                             hint="the file may be truncated or not a PNG; re-export it") from exc
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputError(f"cannot read image ({exc.strerror or exc})", path=path,
                         hint="check that the file exists and is readable") from exc
    if (bad := _not_a_tiff(path, head)) is not None:
        raise bad
    try:
        return _tiff_plane(path, plane, max_megapixels)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise InputError(f"cannot read image ({type(exc).__name__}: {exc})", path=path,
                         hint=_BAD_FILE_HINT) from exc


def to_intensity(arr: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Pixels on CellProfiler's intensity scale, float32 in [0, 1].

    8- and 16-bit unsigned integers are divided by their type's maximum (255, 65535), as
    CellProfiler does. Floating-point images are taken as intensities already on that scale, as
    CellProfiler reads them: every pixel must be finite and lie in [0, 1]. Anything else (signed
    or 32-bit integers, floats outside [0, 1], NaN/inf) is refused: there is no scale to guess.
    """
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D grayscale image, got shape {arr.shape}", path=path,
                         hint="export one channel per file")
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            raise InputError(f"{arr.dtype} image has {n_nan} NaN and {n_inf} infinite pixel(s)", path=path,
                             hint="pixels must be finite intensities; fix the export (e.g. a division by "
                                  "zero in a flat-field step) or save as 16-bit integers")
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        if lo < 0 or hi > 1:
            raise InputError(f"{arr.dtype} image has values from {lo:g} to {hi:g}, outside [0, 1]", path=path,
                             hint="floating-point images are read as intensities already scaled to [0, 1] "
                                  "(as CellProfiler reads them); rescale to [0, 1] or save raw counts as "
                                  "16-bit unsigned integers")
        return arr.astype(np.float32)
    if arr.dtype in (np.uint32, np.int32, np.uint64, np.int64):
        hint = (f"{arr.dtype.itemsize * 8}-bit integer images have no agreed intensity scale (CellProfiler "
                f"would divide by {np.iinfo(arr.dtype).max}); save as 16-bit unsigned integers, or as float "
                "in [0, 1] (a label image is not an intensity image)")
    else:
        hint = "expected 8- or 16-bit unsigned integer grayscale images, or float images in [0, 1]"
    raise InputError(f"unsupported pixel type {arr.dtype}", path=path, hint=hint)


def read_image(path: str | Path, *, plane: int | None = None,
               max_megapixels: float = IMAGE_DEFAULTS["max_megapixels"]) -> np.ndarray:
    """Read one grayscale image as float32 on CellProfiler's scale (see :func:`to_intensity`).

    ``plane`` (1-based) picks one plane of a multi-plane TIFF (z-stack, multi-page, OME-TIFF);
    without it such a file is refused. A plane over ``max_megapixels`` is refused from the TIFF
    header before its pixels are read.
    """
    path = Path(path)
    return to_intensity(_read_raw(path, plane, max_megapixels), path)


def read_channel(site: Site, channel: str) -> np.ndarray:
    """One channel of a site, read with the site's ``image`` options (plane, size limit)."""
    opts = site.image or {}
    return read_image(site.files[channel], plane=opts.get("plane"),
                      max_megapixels=opts.get("max_megapixels", IMAGE_DEFAULTS["max_megapixels"]))


def read_site(site: Site) -> dict[str, np.ndarray]:
    """Read every channel of a site (with the site's ``image`` options).

    The channels must have the same shape, and integer channels the same bit depth: 8-bit files
    beside 16-bit ones come from different acquisitions or exports. (A float channel in [0, 1]
    beside integer ones is accepted: all are on the same intensity scale.)
    """
    opts = site.image or {}
    raw = {ch: _read_raw(Path(p), opts.get("plane"), opts.get("max_megapixels", IMAGE_DEFAULTS["max_megapixels"]))
           for ch, p in site.files.items()}
    images = {ch: to_intensity(im, site.files[ch]) for ch, im in raw.items()}  # each file's own faults first
    shapes = {ch: im.shape for ch, im in images.items()}
    if len(set(shapes.values())) > 1:
        detail = "; ".join(f"{site.files[ch].name} ({ch}): {h}×{w}" for ch, (h, w) in shapes.items())
        raise InputError(f"channels of site {site.key} have different shapes: {detail}",
                         path=next(iter(site.files.values())).parent,
                         hint="every channel of a site must be the same size; re-export the odd file")
    depths = {ch: im.dtype for ch, im in raw.items() if np.issubdtype(im.dtype, np.integer)}
    if len(set(depths.values())) > 1:
        detail = "; ".join(f"{site.files[ch].name} ({ch}): {dt}" for ch, dt in depths.items())
        raise InputError(f"channels of site {site.key} have different pixel types: {detail}",
                         path=next(iter(site.files.values())).parent,
                         hint="the files look like different acquisitions; export every channel with the "
                              "same bit depth")
    return images


#: platemap columns (header names are matched case-insensitively, with or without ``Metadata_``)
PLATEMAP_COLUMNS = ("well", "compound", "concentration", "control", "batch")
#: concentration units → factor to µM (values with units are stored in µM)
CONCENTRATION_UNITS = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "μm": 1.0, "nm": 1e-3, "pm": 1e-6, "fm": 1e-9}
_WELL_RE = re.compile(r"([A-Za-z]{1,2})0*(\d{1,3})")
_CONC_RE = re.compile(r"([+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?)\s*([^\d\s].*)?")
_PM_HINT = ("a platemap is a CSV with a header row naming `well` and `compound` (optional: concentration, "
            "control, batch), one row per well")


def _well_name(value: str) -> str | None:
    """``b2`` / ``B02`` / ``B002`` → ``B02``, ``aa1`` → ``AA01``; None if it is not a well of a plate of
    up to 1536 wells (rows A–AF, columns 1–48)."""
    m = _WELL_RE.fullmatch(value.strip())
    if not m:
        return None
    row, col = m.group(1).upper(), int(m.group(2))
    if (len(row) == 2 and (row[0] != "A" or row[1] > "F")) or not 1 <= col <= 48:
        return None
    return f"{row}{col:02d}"


def _decode_platemap(data: bytes, path: Path) -> str:
    if not data.strip():
        raise InputError("platemap is empty", path=path, hint=_PM_HINT)
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise InputError("platemap is an Excel workbook, not a CSV file", path=path,
                         hint="in Excel: File → Save As → 'CSV UTF-8 (Comma delimited)'")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode Text" export: UTF-16 with a BOM
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputError(f"platemap starts like UTF-16 text but is not ({exc})", path=path,
                             hint="save it as 'CSV UTF-8'") from None
    if b"\x00" in data:
        raise InputError("platemap is not a text file (it contains NUL bytes)", path=path, hint=_PM_HINT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise InputError(f"platemap is neither UTF-8 nor Windows-1252 text ({exc})", path=path,
                         hint="save it as 'CSV UTF-8'") from None
    log.warning("%s is not UTF-8; read it as Windows-1252 (Excel's default CSV encoding)", path)
    return text


def _platemap_rows(text: str, path: Path) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """(header, [(line number, fields)], delimiter) of a CSV export (``,`` ``;`` or tab)."""
    import csv
    import io as _io

    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    counts = {d: len(next(csv.reader([first], delimiter=d), [])) for d in (",", ";", "\t")}
    delim = max(counts, key=lambda d: (counts[d], d == ","))
    try:
        rows = list(csv.reader(_io.StringIO(text, newline=""), delimiter=delim, strict=True))
    except csv.Error as exc:
        raise InputError(f"platemap is not a valid CSV file ({exc})", path=path,
                         hint="check the quotes: a field with a separator must be quoted as a whole") from None
    numbered = [(i + 1, [f.strip() for f in r]) for i, r in enumerate(rows)]
    numbered = [(n, r) for n, r in numbered if any(r)]  # blank lines, Excel's trailing ';;;' rows
    if not numbered:
        raise InputError("platemap is empty", path=path, hint=_PM_HINT)
    (_, header), body = numbered[0], numbered[1:]
    width = len(header)
    for line, r in body:  # a row longer than the header: a separator inside an unquoted field
        if len(r) > width:
            raise InputError(f"line {line} has {len(r)} fields, the header has {width}", path=path,
                             hint="a field with a separator in it (e.g. a compound name with a comma) must be "
                                  "quoted: \"Taxol, batch 2\"")
    while header and not header[-1] and all(len(r) < len(header) or not r[len(header) - 1] for _, r in body):
        header = header[:-1]  # Excel's trailing empty columns
    return header, body, delim


def _concentrations(values: list[tuple[int, str]], decimal_comma: bool, path: Path) -> list[float]:
    """Concentration strings → floats; values with units (``10 µM``, ``100nM``) are converted to µM."""
    parsed: list[tuple[int, str, float, str | None]] = []
    for line, v in values:
        if v == "" or v.upper() in ("NA", "N/A", "NAN", "NONE", "NULL", "-"):
            parsed.append((line, v, float("nan"), None))
            continue
        m = _CONC_RE.fullmatch(v.replace("\u00a0", " ").strip())
        if not m or ("," in m.group(1) and not decimal_comma):
            raise InputError(f"line {line}: concentration {v!r} is not a number", path=path,
                             hint="give a number, optionally with a unit (M, mM, µM/uM, nM, pM), or leave it empty")
        unit = m.group(2).strip() if m.group(2) else None
        if unit is not None and unit.lower() not in CONCENTRATION_UNITS:
            raise InputError(f"line {line}: unknown concentration unit {unit!r} in {v!r}", path=path,
                             hint="use molar units (M, mM, µM or uM, nM, pM), all in one column, or plain numbers")
        num = float(m.group(1).replace(",", "."))
        if num < 0:
            raise InputError(f"line {line}: negative concentration {v!r}", path=path)
        parsed.append((line, v, num, unit))
    with_unit = [p for p in parsed if p[3] is not None]
    without = [p for p in parsed if p[3] is None and p[2] == p[2]]
    if with_unit and without:
        raise InputError(f"line {without[0][0]}: concentration {without[0][1]!r} has no unit, but line "
                         f"{with_unit[0][0]} has one ({with_unit[0][1]!r})", path=path,
                         hint="give every concentration a unit, or none")
    return [num * CONCENTRATION_UNITS[unit.lower()] if unit else num for _, _, num, unit in parsed]


def read_platemap(path: str | Path) -> pd.DataFrame:
    """Read a platemap CSV (well, compound, optional concentration, control, batch) into Metadata_* columns.

    Accepts what spreadsheets export: a UTF-8 byte-order mark, UTF-16 (Excel's "Unicode Text") or
    Windows-1252 text, ``,`` ``;`` or
    tab separators (with ``;`` a decimal comma), CRLF line ends, quoted fields, empty trailing rows
    and columns, headers in any case with or without ``Metadata_``. Well names ``B2``, ``b02``,
    ``B002`` all mean ``B02``; 1536-well names (``AA01``–``AF48``) are read. Concentrations are
    numbers, or numbers with molar units (``10 µM``, ``100 nM``), which are converted to µM.
    Anything else — an Excel workbook, a missing or repeated column, a row with too many fields,
    a name that is not a well, a well listed twice, a concentration that is not one — is an
    :class:`InputError` naming the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read platemap ({exc.strerror or exc})", path=path,
                         hint="check the path given with --platemap") from None
    header, body, delim = _platemap_rows(_decode_platemap(data, path), path)
    keys = [re.sub(r"^metadata_", "", h.strip().lower()) for h in header]
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if not k and any(len(r) > i and r[i] for _, r in body):
            raise InputError(f"column {i + 1} of the platemap has values but no name", path=path, hint=_PM_HINT)
        if k in PLATEMAP_COLUMNS and k in seen:
            raise InputError(f"platemap has column {k!r} twice (columns {seen[k] + 1} and {i + 1}: "
                             f"{header[seen[k]]!r}, {header[i]!r})", path=path, hint="keep one of them")
        seen.setdefault(k, i)
    missing = [k for k in ("well", "compound") if k not in seen]
    if missing:
        raise InputError(f"platemap has no {' and no '.join(repr(k) for k in missing)} column "
                         f"(its columns: {', '.join(map(repr, header))}; separator {delim!r})", path=path,
                         hint=_PM_HINT)
    def col(k: str) -> list[str]:
        i = seen[k]
        return [r[i] if i < len(r) else "" for _, r in body]

    wells = []
    for (line, _), raw in zip(body, col("well")):
        w = _well_name(raw)
        if w is None:
            raise InputError(f"line {line}: {raw!r} is not a well name" if raw else f"line {line} has no well",
                             path=path, hint="wells are a row letter (A–P; AA–AF on 1536-well plates) and a "
                                             "column number, e.g. B02, b2, AA01")
        wells.append(w)
    dup = pd.Series(wells)[pd.Series(wells).duplicated()].unique()
    if len(dup):
        raise InputError(f"platemap lists wells more than once: {', '.join(dup[:10])}", path=path,
                         hint="each well must appear on one row")
    def text(k: str) -> pd.Series:  # empty cells are missing values (NaN), as pandas reads them
        return pd.Series([v if v else None for v in col(k)], dtype="str")

    out = pd.DataFrame({WELL: pd.Series(wells, dtype="str"), COMPOUND: text("compound")})
    if "concentration" in seen:
        out[CONCENTRATION] = _concentrations([(ln, v) for (ln, _), v in zip(body, col("concentration"))],
                                             decimal_comma=delim == ";", path=path)
    out[CONTROL] = pd.Series(col("control"), dtype="str") if "control" in seen else ""
    if "batch" in seen:   # optional: plates imaged together (pooled control spread, NSCB)
        out[BATCH] = text("batch")
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
