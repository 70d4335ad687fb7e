"""Ingest what users already have: CellProfiler CSV exports and ExportToDatabase SQLite files.

Both become our per-cell table: ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``,
``Metadata_ObjectNumber`` + ``Nuclei_*``, ``Cells_*``, ``Cytoplasm_*`` features, one row per cell,
compartments merged the way pycytominer's ``SingleCells`` merges them (its default linking columns):
Cytoplasm ↔ Cells by ``Cytoplasm_Parent_Cells`` = Cells ``ObjectNumber`` and Cytoplasm ↔ Nuclei by
``Cytoplasm_Parent_Nuclei``; without a Cytoplasm table, Nuclei join Cells by ``Cells_Parent_Nuclei``.
``Metadata_ObjectNumber`` is the Cells object number.

* CSV: a folder with ``Image.csv`` + ``<Compartment>.csv``, or a folder of such per-site folders
  (the layout of CellProfiler's ExportToSpreadsheet run per site).
* SQLite: ``Per_Image`` + ``Per_Object`` (single object table) or ``Per_Image`` + ``Per_<Compartment>``
  (one table per object), optionally with a table prefix (``MyExpt_Per_Image``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cellfusion_core import io
from cellfusion_core.errors import InputError
from cellfusion_core.layout import SINGLE_CELL
from cellfusion_core.names import OBJECT_NUMBER, PLATE, SITE, WELL
from profiler.plate import normalize_well

log = logging.getLogger(__name__)

COMPARTMENTS = ("Cells", "Cytoplasm", "Nuclei")
IMAGE_KEYS = {PLATE: ("Metadata_Plate",), WELL: ("Metadata_Well",), SITE: ("Metadata_Site", "Metadata_Field")}
_KEY = "_image_key"


# --------------------------------------------------------------------------------------------
# merging compartments (shared by the CSV and SQLite readers)

def _check_object_table(obj: pd.DataFrame, comp: str, source: str) -> None:
    bad = [c for c in obj.columns if c.startswith(f"{comp}_")
           and not pd.api.types.is_numeric_dtype(obj[c]) and obj[c].notna().any()]
    if bad:
        raise InputError(f"{comp}: non-numeric feature columns {bad[:5]}", path=source,
                         hint="CellProfiler object tables hold numbers only; was the file edited or truncated?")
    num = obj[[c for c in obj.columns if c.startswith(f"{comp}_")]].to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(num).any(axis=0)
    if inf.any():
        cols = [c for c, b in zip([c for c in obj.columns if c.startswith(f"{comp}_")], inf) if b]
        raise InputError(f"{comp}: infinite values in {cols[:3]}", path=source,
                         hint="replace inf by empty cells (NaN) or drop these columns")


def merge_compartments(image: pd.DataFrame, objects: dict[str, pd.DataFrame], *, source: str = "") -> pd.DataFrame:
    """One row per cell from an image table (``_image_key`` + Metadata) and per-compartment tables.

    Each object table has ``_image_key``, ``ObjectNumber`` and ``<Compartment>_*`` columns.
    """
    if "Cells" not in objects:
        raise InputError("no Cells table", path=source, hint="CellProfiler output must include the Cells objects")
    keys = set(image[_KEY])
    for comp, obj in objects.items():
        unknown = sorted(set(obj[_KEY]) - keys)
        if unknown:
            raise InputError(f"{comp} rows refer to ImageNumber(s) {unknown[:5]} that are not in the image table",
                             path=source, hint="the object tables do not line up with the image table; "
                                               "export them from the same CellProfiler run")
        _check_object_table(obj, comp, source)
    cells = objects["Cells"].rename(columns={"ObjectNumber": "_cells"})
    out = cells
    if "Cytoplasm" in objects:
        cyto = objects["Cytoplasm"].drop(columns=["ObjectNumber"])
        if "Cytoplasm_Parent_Cells" not in cyto:
            raise InputError("Cytoplasm table lacks Parent_Cells", path=source,
                             hint="IdentifyTertiaryObjects records Parent_Cells; export it")
        cyto = cyto.rename(columns={"Cytoplasm_Parent_Cells": "_cells"})
        out = out.merge(cyto, on=[_KEY, "_cells"], how="inner")
        link = "Cytoplasm_Parent_Nuclei"
    else:
        link = "Cells_Parent_Nuclei"
    if "Nuclei" in objects:
        if link not in out:
            raise InputError(f"cannot link Nuclei: column {link} is missing", path=source)
        nuc = objects["Nuclei"].rename(columns={"ObjectNumber": link})
        out = out.merge(nuc, on=[_KEY, link], how="inner")
    meta = image[[_KEY, PLATE, WELL, SITE]]
    out = meta.merge(out, on=_KEY, how="inner").rename(columns={"_cells": OBJECT_NUMBER})
    feats = [c for c in out.columns if c.split("_", 1)[0] in COMPARTMENTS]
    out = out[[PLATE, WELL, SITE, OBJECT_NUMBER] + feats]
    return out.sort_values([PLATE, WELL, SITE, OBJECT_NUMBER], kind="stable").reset_index(drop=True)


def _image_meta(image: pd.DataFrame, source: str, prefix: str = "") -> pd.DataFrame:
    out = pd.DataFrame({_KEY: image["ImageNumber"] if "ImageNumber" in image else image[f"{prefix}ImageNumber"]})
    for ours, theirs in IMAGE_KEYS.items():
        col = next((prefix + t for t in theirs if prefix + t in image), None)
        if col is None:
            if ours == SITE:
                out[SITE] = 1
                continue
            raise InputError(f"the image table has no {prefix}{theirs[0]} column", path=source,
                             hint="add plate/well metadata to the CellProfiler pipeline (Metadata module)")
        out[ours] = image[col].to_numpy()
    out[WELL] = out[WELL].astype(str).map(normalize_well)
    out[PLATE] = out[PLATE].astype(str)
    if out[_KEY].duplicated().any():
        raise InputError("ImageNumber is not unique in the image table", path=source)
    return out


# --------------------------------------------------------------------------------------------
# CSV

def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, low_memory=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read CSV ({exc})", path=path) from exc


def _site_folders(folder: Path) -> list[Path]:
    if (folder / "Image.csv").is_file():
        return [folder]
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "Image.csv").is_file())
    if not subs:
        raise InputError("no Image.csv here or in any subfolder", path=folder,
                         hint="point at CellProfiler ExportToSpreadsheet output (Image.csv, Cells.csv …)")
    return subs


def read_cellprofiler_csv(folder: str | Path, compartments: Sequence[str] = COMPARTMENTS) -> pd.DataFrame:
    """Per-cell table from CellProfiler CSV exports (one folder, or one folder per site)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", path=folder)
    parts = []
    for site_dir in _site_folders(folder):
        image = _image_meta(_read_csv(site_dir / "Image.csv"), str(site_dir / "Image.csv"))
        objects = {}
        for comp in compartments:
            p = site_dir / f"{comp}.csv"
            if not p.is_file():
                continue
            t = _read_csv(p)
            for c in ("ImageNumber", "ObjectNumber"):
                if c not in t:
                    raise InputError(f"{comp}.csv has no {c} column", path=p)
            t = t.rename(columns={c: f"{comp}_{c}" for c in t.columns if c not in ("ImageNumber", "ObjectNumber")})
            objects[comp] = t.rename(columns={"ImageNumber": _KEY})
        parts.append(merge_compartments(image, objects, source=str(site_dir)))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------
# SQLite

def _tables(con: sqlite3.Connection) -> list[str]:
    return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")]


def read_cellprofiler_sqlite(path: str | Path, compartments: Sequence[str] = COMPARTMENTS) -> pd.DataFrame:
    """Per-cell table from a CellProfiler ExportToDatabase SQLite file (either object-table form)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("SQLite file not found", path=path)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = _tables(con)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not a readable SQLite database ({exc})", path=path) from exc
    try:
        img_t = [t for t in tables if t.endswith("Per_Image")]
        if len(img_t) != 1:
            raise InputError(f"expected one Per_Image table, found {img_t or 'none'} among {tables}", path=path,
                             hint="write the database with CellProfiler's ExportToDatabase (SQLite)")
        prefix = img_t[0][: -len("Per_Image")]
        image_raw = pd.read_sql_query(f'SELECT * FROM "{img_t[0]}"', con)
        image = _image_meta(image_raw, f"{path}:{img_t[0]}", prefix="Image_")
        objects: dict[str, pd.DataFrame] = {}
        single = f"{prefix}Per_Object"
        if single in tables:
            obj = pd.read_sql_query(f'SELECT * FROM "{single}"', con)
            if "ObjectNumber" not in obj:
                raise InputError(f"{single} has no ObjectNumber column", path=path)
            for comp in compartments:
                cols = [c for c in obj.columns if c.startswith(f"{comp}_")]
                if cols:
                    t = obj[["ImageNumber", "ObjectNumber"] + cols].rename(columns={"ImageNumber": _KEY})
                    # one object table: the compartments of a row are one cell (same ObjectNumber)
                    for parent in ("Cells", "Nuclei"):
                        if comp == "Cytoplasm" and f"Cytoplasm_Parent_{parent}" not in t:
                            t[f"Cytoplasm_Parent_{parent}"] = t["ObjectNumber"]
                    if comp == "Cells" and "Cells_Parent_Nuclei" not in t:
                        t["Cells_Parent_Nuclei"] = t["ObjectNumber"]
                    objects[comp] = t
        else:
            for comp in compartments:
                name = f"{prefix}Per_{comp}"
                if name not in tables:
                    continue
                t = pd.read_sql_query(f'SELECT * FROM "{name}"', con)
                num = f"{comp}_Number_Object_Number"
                if num not in t:
                    raise InputError(f"{name} has no {num} column", path=path)
                t = t.rename(columns={"ImageNumber": _KEY})
                t["ObjectNumber"] = t[num]
                objects[comp] = t
        if not objects:
            raise InputError(f"no object tables for {list(compartments)} among {tables}", path=path)
    finally:
        con.close()
    return merge_compartments(image, objects, source=str(path))


# --------------------------------------------------------------------------------------------
# the command

def read_cellprofiler(source: str | Path) -> pd.DataFrame:
    """CSV folder or SQLite file → per-cell table."""
    source = Path(source)
    if source.is_dir():
        return read_cellprofiler_csv(source)
    if source.suffix.lower() in (".sqlite", ".sqlite3", ".db") or source.is_file():
        return read_cellprofiler_sqlite(source)
    raise InputError("not found", path=source, hint="give a folder of CellProfiler CSVs or a .sqlite file")


def ingest(source: str | Path, out_dir: str | Path, *, platemap: str | Path | None = None,
           allow_unimaged_wells: bool = False) -> Path:
    """``profiler ingest``: CellProfiler output → ``out_dir/single_cell.parquet`` (+ manifest)."""
    from profiler.plate import read_platemap
    from profiler.profiles import annotate

    out_dir = Path(out_dir)
    cells = read_cellprofiler(source)
    inputs: dict[str, Path] = {"source": Path(source)}
    if platemap is not None:
        cells = annotate(cells, read_platemap(platemap), allow_unimaged_wells=allow_unimaged_wells)
        inputs["platemap"] = Path(platemap)
    io.write_parquet(cells, out_dir / SINGLE_CELL)
    io.write_manifest(out_dir, command="profiler ingest", inputs=inputs,
                      parameters={"allow_unimaged_wells": allow_unimaged_wells},
                      outputs={SINGLE_CELL: {"rows": len(cells), "columns": cells.shape[1],
                                                       "wells": int(cells.groupby([PLATE, WELL]).ngroups)}})
    return out_dir
