"""Segmentation: nuclei → cells → cytoplasm label images (pure functions on arrays).

First version: Otsu nuclei with distance-transform watershed declumping, border and size
filtering; cells by watershed from the nuclei on the cell-body channel; cytoplasm = cell − nucleus.
Object numbers agree across compartments: cell k and cytoplasm k belong to nucleus k.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

DEFAULTS: dict[str, Any] = {
    "nuclei": {"min_diameter": 8, "max_diameter": 60, "smoothing": 1.0, "correction": 1.0,
               "exclude_border": True},
    "cells": {"threshold_correction": 0.6, "max_distance": 60},
}


@dataclass
class Segmentation:
    nuclei: np.ndarray     # (H, W) int32, 1..N
    cells: np.ndarray      # (H, W) int32, cell k grown from nucleus k
    cytoplasm: np.ndarray  # (H, W) int32, cells minus nuclei (may lack some numbers)

    @property
    def n_objects(self) -> int:
        return int(self.nuclei.max())


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber objects 1..N in order of their current numbers (no gaps)."""
    out, _, _ = segmentation.relabel_sequential(labels.astype(np.int32))
    return out.astype(np.int32)


def segment_nuclei(dna: np.ndarray, *, min_diameter: float = 8, max_diameter: float = 60,
                   smoothing: float = 1.0, correction: float = 1.0,
                   exclude_border: bool = True) -> np.ndarray:
    """Nuclei from a DNA image: Otsu threshold × correction, shape-based declumping."""
    img = filters.gaussian(dna, sigma=smoothing, preserve_range=True) if smoothing else dna
    if np.ptp(img) == 0:
        return np.zeros(dna.shape, np.int32)
    mask = img > filters.threshold_otsu(img) * correction
    mask = ndi.binary_fill_holes(morphology.remove_small_objects(mask, max_size=int(np.pi * (min_diameter / 2) ** 2)))
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=max(int(min_diameter // 2), 1), labels=measure.label(mask),
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-dist, markers, mask=mask)
    if exclude_border:
        labels = segmentation.clear_border(labels)
    areas = np.bincount(labels.ravel())
    lo, hi = np.pi * (min_diameter / 2) ** 2, np.pi * (max_diameter / 2) ** 2
    bad = np.flatnonzero((areas < lo) | (areas > hi))
    labels[np.isin(labels, bad[bad > 0])] = 0
    return relabel_sequential(labels)


def segment_cells(nuclei: np.ndarray, cell_image: np.ndarray, *, threshold_correction: float = 0.6,
                  max_distance: float = 60) -> np.ndarray:
    """Cells grown from the nuclei over the foreground of the cell-body image (watershed)."""
    if nuclei.max() == 0:
        return np.zeros_like(nuclei)
    img = filters.gaussian(cell_image, sigma=1.0, preserve_range=True)
    fg = img > filters.threshold_otsu(img) * threshold_correction if np.ptp(img) > 0 else np.ones_like(img, bool)
    dist_to_nucleus = ndi.distance_transform_edt(nuclei == 0)
    fg = (fg & (dist_to_nucleus <= max_distance)) | (nuclei > 0)
    cells = segmentation.watershed(-img, markers=nuclei, mask=fg)
    return cells.astype(np.int32)


def cytoplasm(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Cell minus its nucleus, keeping the cell's number."""
    return np.where(nuclei > 0, 0, cells).astype(np.int32)


def segment_site(images: Mapping[str, np.ndarray], *, nuclei_channel: str, cells_channel: str,
                 params: Mapping[str, Any] | None = None) -> Segmentation:
    """Segment one site. ``params`` has ``nuclei`` and ``cells`` sub-mappings (see DEFAULTS)."""
    params = params or {}
    nuc_kw = {**DEFAULTS["nuclei"], **params.get("nuclei", {})}
    cell_kw = {**DEFAULTS["cells"], **params.get("cells", {})}
    nuclei = segment_nuclei(images[nuclei_channel], **nuc_kw)
    cells = segment_cells(nuclei, images[cells_channel], **cell_kw)
    return Segmentation(nuclei=nuclei, cells=cells, cytoplasm=cytoplasm(cells, nuclei))
