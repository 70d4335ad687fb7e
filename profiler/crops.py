"""Fixed-size crops around each segmented cell, all channels — the CNN's input.

:func:`cut_crops` is a pure function of (label image, channel images). Each crop is a
``size × size`` window centred on the object's centroid (rounded to a pixel); parts of the window
outside the image are zero. :func:`write_crops` stores a stack as ``crops.tif`` (N, H, W, C) plus
``crops.parquet`` (one row per crop, keyed by Metadata_Plate/Well/Site/ObjectNumber, same order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cellfusion_core import io
from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.layout import CROPS_TABLE, CROPS_TIF
from cellfusion_core.names import OBJECT_NUMBER



def cut_crops(labels: np.ndarray, images: Mapping[str, np.ndarray] | np.ndarray, size: int = 64, *,
              channels: Sequence[str] | None = None, n_objects: int | None = None,
              mask_background: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``size × size`` window around every object of ``labels``.

    Parameters
    ----------
    labels:
        (H, W) integer label image, objects 1..N (0 = background).
    images:
        channel name → (H, W) array (dict order, or ``channels`` order), or one (H, W, C) array.
    size:
        Side of the square crop in pixels.
    n_objects:
        N; default ``labels.max()``. Absent object numbers give no crop.
    mask_background:
        Zero every pixel that does not belong to the object itself.

    Returns
    -------
    crops:
        (n, size, size, C) array, the images' dtype; one crop per object present, by object number.
    object_numbers:
        (n,) int64, the object number of each crop.
    """
    if size < 2:
        raise ConfigError(f"crop size must be at least 2 pixels, got {size}")
    if isinstance(images, Mapping):
        names = list(channels) if channels is not None else list(images)
        stack = np.stack([np.asarray(images[c]) for c in names], axis=-1)
    else:
        stack = np.asarray(images)
        if stack.ndim == 2:
            stack = stack[..., None]
    if stack.shape[:2] != labels.shape:
        raise InputError(f"label image {labels.shape} and channel images {stack.shape[:2]} differ in size")
    n = int(labels.max()) if n_objects is None else int(n_objects)
    if n == 0:
        return np.zeros((0, size, size, stack.shape[-1]), stack.dtype), np.zeros(0, np.int64)
    flat = labels.ravel()
    rr, cc = np.indices(labels.shape)
    counts = np.bincount(flat, minlength=n + 1)[: n + 1]
    sy = np.bincount(flat, weights=rr.ravel(), minlength=n + 1)[: n + 1]
    sx = np.bincount(flat, weights=cc.ravel(), minlength=n + 1)[: n + 1]
    present = np.flatnonzero(counts[1:] > 0) + 1
    half = size // 2
    h, w = labels.shape
    pad = np.pad(stack, ((size, size), (size, size), (0, 0)))
    lab_pad = np.pad(labels, size) if mask_background else None
    out = np.zeros((len(present), size, size, stack.shape[-1]), stack.dtype)
    for i, obj in enumerate(present):
        cy = int(np.floor(sy[obj] / counts[obj] + 0.5))
        cx = int(np.floor(sx[obj] / counts[obj] + 0.5))
        y0, x0 = cy - half + size, cx - half + size
        win = pad[y0:y0 + size, x0:x0 + size]
        if mask_background:
            win = np.where((lab_pad[y0:y0 + size, x0:x0 + size] == obj)[..., None], win, 0)
        out[i] = win
    return out, present.astype(np.int64)


def to_uint16(crops: np.ndarray) -> np.ndarray:
    """Float crops on CellProfiler's 0–1 scale (raw / 65535) → uint16; integer crops pass through."""
    if crops.dtype == np.uint16:
        return crops
    if np.issubdtype(crops.dtype, np.integer):
        return np.clip(crops, 0, 65535).astype(np.uint16)
    return np.clip(np.rint(np.asarray(crops, np.float64) * 65535), 0, 65535).astype(np.uint16)


def write_crops(crops: np.ndarray, table: pd.DataFrame, out_dir: str | Path, *,
                channels: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``crops.tif`` (N, H, W, C) uint16 and ``crops.parquet`` (rows in the same order)."""
    import tifffile

    if crops.ndim != 4 or len(crops) != len(table):
        raise InputError(f"crop stack {crops.shape} and table ({len(table)} rows) do not match")
    if OBJECT_NUMBER not in table.columns:
        raise InputError(f"crop table needs a {OBJECT_NUMBER} column")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = to_uint16(crops)
    tif = out_dir / CROPS_TIF
    with io.atomic_path(tif) as tmp:
        tifffile.imwrite(tmp, data, photometric="minisblack", planarconfig="contig",
                         description=json.dumps({"shape": list(data.shape),
                                                 "channels": list(channels) if channels else None}))
    tab = io.write_parquet(table.reset_index(drop=True), out_dir / CROPS_TABLE)
    return tif, tab


def write_crop_stack(pages: Iterable[np.ndarray], shape: tuple[int, int, int, int], path: str | Path, *,
                     channels: Sequence[str] | None = None) -> Path:
    """Write ``crops.tif`` page by page: ``pages`` yields ``shape[0]`` uint16 (H, W, C) crops.

    Memory holds one page at a time, whatever the number of cells; the file is the one
    :func:`write_crops` writes (same description, BigTIFF past 2 GB) and appears only when complete.
    """
    import tifffile

    n, h, w, c = (int(v) for v in shape)
    big = n * h * w * c * 2 > 2**31 - 2**25
    desc = json.dumps({"shape": [n, h, w, c], "channels": list(channels) if channels else None})

    def checked() -> Iterator[np.ndarray]:
        count = 0
        for page in pages:
            if page.shape != (h, w, c):
                raise InputError(f"crop {count} has shape {page.shape}, expected {(h, w, c)}", path=path)
            count += 1
            yield to_uint16(np.asarray(page))
        if count != n:
            raise InputError(f"{count} crops written, {n} expected", path=path)

    with io.atomic_path(path) as tmp:
        if n == 0:
            tifffile.imwrite(tmp, np.zeros((0, h, w, c), np.uint16), photometric="minisblack",
                             planarconfig="contig", description=desc)
        else:
            tifffile.imwrite(tmp, checked(), shape=(n, h, w, c), dtype=np.uint16, photometric="minisblack",
                             planarconfig="contig", description=desc, bigtiff=big)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# ``profiler extract --crops``: one crop per row of the per-cell table, per-site partitions.

CROP_DEFAULTS = {"enabled": False, "size": 64, "mask_background": False}


def crop_params(section: Mapping | None, *, enabled: bool | None = None, size: int | None = None) -> dict:
    """The pipeline's ``crops:`` section over :data:`CROP_DEFAULTS`, with explicit overrides (CLI)."""
    p = {**CROP_DEFAULTS, **dict(section or {})}
    if enabled is not None:
        p["enabled"] = bool(enabled)
    if size is not None:
        p["size"] = size
    unknown = set(p) - set(CROP_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown key(s) in the crops section: {', '.join(sorted(unknown))}",
                          hint=f"allowed: {', '.join(CROP_DEFAULTS)}")
    try:
        p["size"] = int(p["size"])
    except (TypeError, ValueError):
        raise ConfigError(f"crops size must be an integer number of pixels, got {p['size']!r}") from None
    if p["size"] < 8 or p["size"] > 1024:
        raise ConfigError(f"crops size must lie between 8 and 1024 pixels, got {p['size']}")
    return p


def site_crops(labels: np.ndarray, images: Mapping[str, np.ndarray], channels: Sequence[str], n_objects: int,
               size: int, mask_background: bool = False) -> np.ndarray:
    """uint16 (n_objects, size, size, C): row i is object i + 1 (the per-cell table's row order).

    An object number absent from ``labels`` gets an all-zero crop (it keeps its row)."""
    crops, numbers = cut_crops(labels, images, size, channels=channels, n_objects=n_objects,
                               mask_background=mask_background)
    out = np.zeros((n_objects, size, size, len(channels)), np.uint16)
    out[numbers - 1] = to_uint16(crops)
    return out


def save_site_crops(crops: np.ndarray, path: str | Path) -> Path:
    """One site's crops as ``.npy`` (written atomically; no pickle)."""
    path = Path(path)
    with io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(crops), allow_pickle=False)
    return path


def load_site_crops(path: str | Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read this site's crop partition ({exc})", path=path,
                         hint="delete it and rerun `profiler extract --crops` (the site is recomputed)") from exc
    if arr.ndim != 4:
        raise InputError(f"a crop partition must be (N, H, W, C), got {arr.shape}", path=path)
    return arr
