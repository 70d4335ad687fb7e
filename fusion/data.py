"""Single-cell crop stacks for the CNN: loading, checking, labels.

A crop set is an (N, H, W, C) image stack plus a table with one row per crop, in the same order:

* a folder written by ``profiler extract --crops`` (``crops.tif`` + ``crops.parquet``), or
* any (N, H, W, C) TIFF with a CSV or Parquet table beside it (same stem, e.g. the BBBC021
  crops ``bbbc021_crops.tif`` + ``bbbc021_crops.csv``), or given explicitly with ``table=``.

Plain column names common in published tables (``plate, well, site, compound, concentration, moa,
batch, control, object_number``) are renamed to the project's ``Metadata_*`` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellfusion_core.errors import InputError
from cellfusion_core.layout import CROPS_TABLE, CROPS_TIF
from cellfusion_core.names import (BATCH, COMPOUND, CONCENTRATION, CONTROL, MOA, OBJECT_NUMBER, PLATE, SITE, WELL)

ALIASES = {
    "plate": PLATE, "well": WELL, "site": SITE, "compound": COMPOUND, "concentration": CONCENTRATION,
    "moa": MOA, "batch": BATCH, "control": CONTROL, "object_number": OBJECT_NUMBER, "objectnumber": OBJECT_NUMBER,
}


@dataclass
class CropSet:
    """``images`` (N, H, W, C) and ``meta`` (N rows, Metadata_* columns), row i ↔ crop i."""

    images: np.ndarray
    meta: pd.DataFrame
    source: Path | None = None

    def __post_init__(self) -> None:
        check_crops(self.images, self.meta, self.source)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def n_channels(self) -> int:
        return int(self.images.shape[-1])

    def labels(self, column: str) -> np.ndarray:
        """Values of a label column (``moa`` / ``Metadata_MoA`` …) as an array; errors name the file."""
        col = resolve_column(self.meta, column, self.source)
        values = self.meta[col]
        if values.isna().any():
            bad = int(values.isna().sum())
            raise InputError(f"label column {col!r} is empty for {bad} of {len(values)} crops", path=self.source,
                             hint="drop those crops or fill the labels in the table")
        return values.astype(str).to_numpy()

    def subset(self, index: np.ndarray) -> "CropSet":
        index = np.asarray(index)
        return CropSet(self.images[index], self.meta.iloc[index].reset_index(drop=True), self.source)


def resolve_column(meta: pd.DataFrame, column: str, source: Path | None = None) -> str:
    """A column by its name, its Metadata_ name or its plain alias."""
    for cand in (column, ALIASES.get(column.lower(), column), f"Metadata_{column}"):
        if cand in meta.columns:
            return cand
    lower = {c.lower(): c for c in meta.columns}
    if column.lower() in lower:
        return lower[column.lower()]
    raise InputError(f"the crop table has no column {column!r}", path=source,
                     hint=f"columns are: {', '.join(map(str, meta.columns))}")


def check_crops(images: np.ndarray, meta: pd.DataFrame, source: Path | None = None) -> None:
    if not hasattr(images, "ndim") or images.ndim != 4:
        raise InputError(f"a crop stack must be (N, H, W, C), got shape {getattr(images, 'shape', None)}",
                         path=source, hint="write crops as one multi-page TIFF of (H, W, C) pages")
    if images.shape[0] != len(meta):
        raise InputError(f"the crop stack has {images.shape[0]} crops but its table has {len(meta)} rows",
                         path=source, hint="the table must have exactly one row per crop, in stack order")
    if images.shape[0] == 0:
        raise InputError("the crop stack is empty", path=source)


def standardize_columns(meta: pd.DataFrame) -> pd.DataFrame:
    """Rename plain published column names to Metadata_* (existing Metadata_* names win)."""
    rename = {}
    for col in meta.columns:
        target = ALIASES.get(str(col).lower())
        if target and target not in meta.columns and target not in rename.values():
            rename[col] = target
    return meta.rename(columns=rename)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"cannot read the crop table ({exc})", path=path,
                         hint="give a CSV or Parquet file with one row per crop") from exc


def _read_stack(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            arr = tf.series[0].asarray()
    except Exception as exc:
        raise InputError(f"cannot read the crop stack ({exc})", path=path,
                         hint="give an (N, H, W, C) TIFF stack") from exc
    if arr.ndim == 3:  # (N, H, W) single channel
        arr = arr[..., None]
    return arr


def find_table(tif: Path) -> Path:
    if tif.name == CROPS_TIF and (tif.parent / CROPS_TABLE).is_file():
        return tif.parent / CROPS_TABLE
    for suffix in (".parquet", ".csv"):
        cand = tif.with_suffix(suffix)
        if cand.is_file():
            return cand
    raise InputError("no table found beside the crop stack", path=tif,
                     hint=f"put {tif.stem}.csv or {tif.stem}.parquet beside it, or pass the table explicitly")


def load_crops(path: str | Path, table: str | Path | pd.DataFrame | None = None) -> CropSet:
    """Load a crop set from a folder (``crops.tif`` + ``crops.parquet``) or a TIFF + table."""
    path = Path(path)
    if path.is_dir():
        tif = path / CROPS_TIF
        if not tif.is_file():
            raise InputError(f"no {CROPS_TIF} in this folder", path=path,
                             hint="run `profiler extract --crops`, or point at a crop TIFF")
    elif path.is_file():
        tif = path
    else:
        raise InputError("crop stack not found", path=path)
    if isinstance(table, pd.DataFrame):
        meta, table_path = table.reset_index(drop=True), None
    else:
        table_path = Path(table) if table is not None else find_table(tif)
        if not table_path.is_file():
            raise InputError("crop table not found", path=table_path)
        meta = _read_table(table_path)
    images = _read_stack(tif)
    meta = standardize_columns(meta)
    if images.shape[0] != len(meta):
        raise InputError(f"the crop stack has {images.shape[0]} crops but {table_path or 'the table'} has {len(meta)} rows",
                         path=tif, hint="the table must have exactly one row per crop, in stack order")
    return CropSet(images, meta, tif)


def well_keys(meta: pd.DataFrame) -> list[str]:
    """The per-well grouping keys present: plate (if any) and well."""
    keys = [k for k in (PLATE, WELL) if k in meta.columns]
    if WELL not in keys:
        raise InputError(f"the crop table has no {WELL} column; embeddings cannot be aggregated per well")
    return keys
