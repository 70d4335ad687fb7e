"""Review images: the nuclear channel in blue, the cell channel in green, nucleus outlines in
yellow and cell outlines in magenta, one PNG per site (``profiler extract --overlays``)."""

from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from cellfusion_core import io


def _stretch(im: np.ndarray) -> np.ndarray:
    im = np.asarray(im, np.float32)
    lo, hi = np.percentile(im, [0.5, 99.8])
    return np.clip((im - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(im)


def overlay_rgb(nuclei_image: np.ndarray, cells_image: np.ndarray, nuclei: np.ndarray,
                cells: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 overlay of outlines on the two channels (contrast-stretched)."""
    rgb = np.zeros(nuclei.shape + (3,), np.float32)
    rgb[..., 2] = _stretch(nuclei_image)
    rgb[..., 1] = _stretch(cells_image) * 0.8
    cb = find_boundaries(cells, mode="inner")
    nb = find_boundaries(nuclei, mode="inner")
    rgb[cb] = (1.0, 0.0, 1.0)
    rgb[nb] = (1.0, 1.0, 0.0)
    return (rgb * 255 + 0.5).astype(np.uint8)


def write_overlay(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG (atomically)."""
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(buf, format="PNG", optimize=False)
    return io.write_bytes(buf.getvalue(), path)
